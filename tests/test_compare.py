"""in2n-compare: before/after renders of a nerfacto run and its edit along one camera path, and its error messages."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict

import mediapy
import pytest
import torch
import yaml
from nerfstudio.configs.method_configs import method_configs
from nerfstudio.engine.trainer import TrainerConfig

from in2n.errors import In2nError
from in2n.method_configs import in2n as in2n_method
from in2n.synthetic.camera_path import SHIPPED_CAMERA_PATH, OrbitConfig, orbit_poses
from in2n.synthetic.scene import render_view
from in2n.tools.compare import STILL_NAME, VIDEO_NAME, CameraPath, CompareConfig, check_frames, compare, read_run
from tests.conftest import SCENE, ns, run
from tests.helpers import ORBIT_STRIDE, distances, flat, read_rgb, short_orbit

IDENTITY_FRAME = {"transform": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], "scale": 1.0}


def write_run(
    output_dir: Path, config: TrainerConfig, frame: Dict[str, Any] = IDENTITY_FRAME, checkpoint: bool = True
) -> Path:
    """A run folder as ns-train leaves one (config.yml, dataparser_transforms.json, a checkpoint file), untrained."""
    config = copy.deepcopy(config)
    config.output_dir, config.experiment_name, config.timestamp = output_dir, "scene", "run"
    run_dir = config.get_base_dir()
    models = run_dir / config.relative_model_dir
    models.mkdir(parents=True)
    if checkpoint:
        (models / "step-000000001.ckpt").write_bytes(b"written by the test, not by a trainer")
    (run_dir / "config.yml").write_text(yaml.dump(config))
    (run_dir / "dataparser_transforms.json").write_text(json.dumps(frame))
    return run_dir / "config.yml"


@pytest.fixture
def runs(tmp_path: Path) -> Dict[str, Path]:
    """config.yml of an untrained nerfacto run and in2n run."""
    return {
        "nerfacto": write_run(tmp_path / "nerfacto", method_configs["nerfacto"]),
        "in2n": write_run(tmp_path / "in2n", in2n_method.config),
    }


def compare_error(**options) -> str:
    with pytest.raises(In2nError) as error:
        compare(CompareConfig(**options))
    return flat(str(error.value))


def test_missing_and_foreign_configs_are_named(runs: Dict[str, Path], tmp_path: Path):
    message = compare_error(original=tmp_path / "nowhere" / "config.yml", edited=runs["in2n"])
    assert "--original" in message and "does not exist" in message

    not_a_run = tmp_path / "not-a-run.yml"
    not_a_run.write_text("learning_rate: 0.01\n")
    message = compare_error(original=runs["nerfacto"], edited=not_a_run)
    assert f"--edited {not_a_run} is not the config.yml that ns-train writes" in message

    unreadable = tmp_path / "unreadable.yml"
    unreadable.write_bytes(b"\x00{{{ not yaml")
    assert "could not be read as a run's config.yml" in compare_error(original=unreadable, edited=runs["in2n"])


def test_swapped_runs_are_explained(runs: Dict[str, Path]):
    message = compare_error(original=runs["in2n"], edited=runs["in2n"])
    assert "--original" in message and "is an in2n run" in message
    message = compare_error(original=runs["nerfacto"], edited=runs["nerfacto"])
    assert "is a nerfacto run, not an in2n run" in message


def test_runs_without_checkpoint_or_moved_are_explained(tmp_path: Path, runs: Dict[str, Path]):
    empty = write_run(tmp_path / "empty", in2n_method.config, checkpoint=False)
    assert "holds no checkpoint" in compare_error(original=runs["nerfacto"], edited=empty)

    moved = tmp_path / "moved"
    shutil.move(runs["in2n"].parent, moved)
    message = compare_error(original=runs["nerfacto"], edited=moved)
    assert "the run wrote its files to" in message and "Move the run folder back" in message


def test_camera_path_problems_are_explained(runs: Dict[str, Path], tmp_path: Path):
    missing = tmp_path / "missing.json"
    message = compare_error(original=runs["nerfacto"], edited=runs["in2n"], camera_path=missing)
    assert f"--camera-path {missing} does not exist" in message
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"camera_path": [{"fov": 50.0}], "render_width": 64, "render_height": 48}))
    message = compare_error(original=runs["nerfacto"], edited=runs["in2n"], camera_path=broken)
    assert "is not a camera path file that ns-render reads" in message


def test_missing_ffmpeg_is_explained(runs: Dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("in2n.tools.compare.shutil.which", lambda name: None)
    message = compare_error(original=runs["nerfacto"], edited=runs["in2n"])
    assert "ffmpeg is not installed" in message and "apt install ffmpeg" in message


def test_runs_of_different_datasets_are_refused_and_a_foreign_path_is_flagged(
    tmp_path: Path, runs: Dict[str, Path], capsys: pytest.CaptureFixture
):
    other = write_run(tmp_path / "other", in2n_method.config, frame={**IDENTITY_FRAME, "scale": 0.5})
    assert "were trained on datasets with different cameras" in compare_error(original=runs["nerfacto"], edited=other)

    original = read_run(runs["nerfacto"], "--original", edited=False)
    edited = read_run(runs["in2n"], "--edited", edited=True)
    check_frames(original, edited, CameraPath(SHIPPED_CAMERA_PATH, 48, 12.0, frame=IDENTITY_FRAME))
    assert capsys.readouterr().out == ""
    check_frames(original, edited, CameraPath(SHIPPED_CAMERA_PATH, 48, 12.0, frame={**IDENTITY_FRAME, "scale": 2.0}))
    assert "may not look at the scene" in flat(capsys.readouterr().out)


@pytest.mark.e2e
def test_console_command_prints_the_message_without_traceback(tmp_path: Path):
    result = run([ns("in2n-compare"), "--original", tmp_path / "none.yml", "--edited", tmp_path / "none.yml"],
                 cwd=tmp_path, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "in2n: error: --original" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
def test_failed_render_shows_the_end_of_its_output(tmp_path: Path, runs: Dict[str, Path]):
    config = copy.deepcopy(method_configs["nerfacto"])
    config.pipeline.datamanager.data = tmp_path / "no-such-scene"
    original = write_run(tmp_path / "no-data", config)
    message = compare_error(original=original, edited=runs["in2n"], output_dir=tmp_path / "renders")
    assert "ns-render failed on --original" in message
    log = tmp_path / "renders" / "logs" / "render-original.log"
    last_line = [line for line in log.read_text().splitlines() if line.strip()][-1]
    assert str(log) in message and flat(last_line) in message and "no-such-scene" in message


@pytest.mark.e2e
def test_before_after_puts_the_original_left_and_the_edit_right(nerfacto_run: Path, negative_run: Path, tmp_path: Path):
    output = tmp_path / "before_after"
    result = run([ns("in2n-compare"), "--original", nerfacto_run.parent / "config.yml",
                  "--edited", negative_run / "config.yml", "--camera-path", short_orbit(tmp_path / "orbit.json"),
                  "--output-dir", output], cwd=tmp_path)  # fmt: skip
    printed = flat(result.stdout)
    assert str(output / VIDEO_NAME) in printed and str(output / STILL_NAME) in printed

    originals, edits = sorted((output / "original").glob("*.png")), sorted((output / "edited").glob("*.png"))
    assert len(originals) == len(edits) == 6
    video = mediapy.read_video(output / VIDEO_NAME)
    assert video.shape == (6, 96, 2 * 128, 3)
    assert video.metadata.fps == pytest.approx(12.0)

    still = read_rgb(output / STILL_NAME)
    assert still.shape[0] > 96 and still.shape[1] == 2 * 128, "the frames under a strip of labels"
    left, right = still[-96:, :128], still[-96:, 128:]
    assert torch.equal(left, read_rgb(originals[3])) and torch.equal(right, read_rgb(edits[3]))
    middle = torch.from_numpy(video[3]).float() / 255.0
    assert (middle[:, :128] - left).abs().mean() < 0.03 and (middle[:, 128:] - right).abs().mean() < 0.03

    # The middle frame is orbit camera 24: the original shows what the scene looks like from there, the edit shows
    # the negative editor's target of that view.
    truth = render_view(replace(SCENE, width=128, height=96), orbit_poses(OrbitConfig())[3 * ORBIT_STRIDE])
    truth = torch.from_numpy(truth).float() / 255.0
    to_original, to_target = distances(left, truth)
    assert to_original < 0.5 * to_target
    to_original, to_target = distances(right, truth)
    assert to_target < 0.5 * to_original
