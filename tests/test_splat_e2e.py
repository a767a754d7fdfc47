"""The real commands on Gaussian splats: ns-train in2n-splatfacto -> ns-train in2n-splat -> ns-render, in2n-export,
in2n-plot, in2n-compare; a kill and a resume. On the CPU, offline. (Runs of the wrong kind are refused in
test_splat_edit, through the trainer ns-train sets up.)"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import mediapy
import pytest

from in2n.runs.checkpoints import checkpoints_in, load_checkpoint_file
from in2n.tools.compare import STILL_NAME, VIDEO_NAME
from tests.conftest import SPLAT_EDIT_STEPS, SPLAT_PASS_EVERY, ns, run, splat_args, splat_run_dir
from tests.helpers import distances, flat, read_rgb, short_orbit
from tests.processes import start_process_group, wait_until

pytestmark = pytest.mark.e2e

MIN_GAP_DB = 10.0
"""Held-out views must be this much closer to the edited target than to the original (and the reverse before)."""


def newest(models: Path) -> Tuple[int, Dict]:
    found = checkpoints_in(models)
    return max(found), load_checkpoint_file(found[max(found)])


def render_test_views(config: Path, output: Path, cwd: Path, env: Optional[Dict[str, str]] = None) -> List[Path]:
    result = run([ns("ns-render"), "dataset", "--load-config", config, "--output-path", output, "--split", "test",
                  "--rendered-output-names", "rgb", "--image-format", "png"], cwd=cwd, env=env)  # fmt: skip
    assert "InstructPix2Pix" not in result.stdout + result.stderr
    return sorted(output.rglob("*.png"))


def psnr_gaps(renders: List[Path], scene: Path) -> List[float]:
    """For each render, its PSNR to the negative editor's target minus its PSNR to the original view (dB)."""
    gaps = []
    for path in renders:
        to_original, to_target = distances(read_rgb(path), read_rgb(scene / "images" / path.name))
        gaps.append(10 * math.log10(to_original / to_target))
    return gaps


def test_held_out_views_move_10_db_towards_the_edit_and_render_without_the_editor_or_alexnet(
    splat_negative_run: Path, splatfacto_run: Path, scene: Path, workdir: Path
) -> None:
    before = render_test_views(splatfacto_run.parent / "config.yml", workdir / "splat-renders-before", workdir)
    no_weights = workdir / "torch-home-without-alexnet"  # and the hub is offline: nothing can be downloaded
    after = render_test_views(
        splat_negative_run / "config.yml", workdir / "splat-renders-after", workdir, env={"TORCH_HOME": str(no_weights)}
    )
    assert len(before) == len(after) == 2
    assert all(read_rgb(path).shape == (48, 64, 3) for path in after)
    gaps_before, gaps_after = psnr_gaps(before, scene), psnr_gaps(after, scene)
    assert all(gap <= -MIN_GAP_DB for gap in gaps_before), gaps_before
    assert all(gap >= MIN_GAP_DB for gap in gaps_after), gaps_after

    base_step, base = newest(splatfacto_run)
    step, state = newest(splat_negative_run / "nerfstudio_models")
    assert step == base_step + SPLAT_EDIT_STEPS
    assert not [key for key in state["pipeline"] if any(part in key for part in ("unet", "vae", "text_encoder"))]
    count = state["pipeline"]["_model.gauss_params.means"].shape[0]
    assert count == base["pipeline"]["_model.gauss_params.means"].shape[0], "the Gaussians the edit started from"
    edit = state["in2n"]
    views = len(edit["image_sizes"])
    assert edit["schedule"]["views_edited"] == views * SPLAT_EDIT_STEPS // SPLAT_PASS_EVERY, "a pass every 25 steps"
    progress = (splat_negative_run / "edit_progress.csv").read_text().splitlines()
    assert len(progress) == 1 + views * SPLAT_EDIT_STEPS // SPLAT_PASS_EVERY


def test_export_plot_and_compare_work_on_a_splat_edit(
    splat_negative_run: Path, splatfacto_run: Path, scene: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "exported"
    run([ns("in2n-export"), "--load-config", splat_negative_run / "config.yml", "--output-dir", exported],
        cwd=tmp_path)  # fmt: skip
    _, state = newest(splat_negative_run / "nerfstudio_models")
    transforms = json.loads((exported / "transforms.json").read_text())
    assert transforms["ply_file_path"] == "sparse_pc.ply" and (exported / "sparse_pc.ply").is_file()
    edited = state["in2n"]["edited_views"]
    assert len(edited) == len(state["in2n"]["image_sizes"])
    changed = [p for p in (exported / "images").iterdir() if p.read_bytes() != (scene / "images" / p.name).read_bytes()]
    assert len(changed) == len(edited), "every training view exported edited, the eval views as captured"

    result = run([ns("in2n-plot"), splat_negative_run], cwd=tmp_path)
    assert (splat_negative_run / "edit_progress.png").is_file() and "edit_progress.png" in flat(result.stdout)

    output = tmp_path / "before_after"
    run([ns("in2n-compare"), "--original", splatfacto_run.parent / "config.yml",
         "--edited", splat_negative_run / "config.yml", "--camera-path", short_orbit(tmp_path / "orbit.json"),
         "--output-dir", output], cwd=tmp_path)  # fmt: skip
    video = mediapy.read_video(output / VIDEO_NAME)
    assert video.shape == (6, 96, 2 * 128, 3)
    still = read_rgb(output / STILL_NAME)
    left, right = still[-96:, :128], still[-96:, 128:]
    # The negative of the original side is what the edited side should show.
    assert (1.0 - left - right).abs().mean() < (left - right).abs().mean()


RESUME_STEPS = 60
SAVE_EVERY = 10


def test_a_killed_splat_edit_resumes_and_ends_at_the_same_step(
    splatfacto_run: Path, scene: Path, workdir: Path
) -> None:
    name = "killed"
    models = splat_run_dir(workdir, name) / "nerfstudio_models"
    args = splat_args(splatfacto_run, workdir, name, "--max-num-iterations", RESUME_STEPS, "--steps-per-save",
                      SAVE_EVERY, "nerfstudio-data", "--data", scene)  # fmt: skip
    base_step, _ = newest(splatfacto_run)
    log = workdir / f"splat-{name}.log"
    with open(log, "w") as output:
        process = start_process_group(args, output, cwd=workdir)
    wait_until(lambda: models.is_dir() and max(checkpoints_in(models), default=0) >= base_step + 2 * SAVE_EVERY,
               process, 600, "two checkpoints", log)  # fmt: skip
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at, killed = newest(models)
    assert killed["in2n"]["edit_start_step"] == base_step + 1

    resumed = run(splat_args(models, workdir, name, "--max-num-iterations", RESUME_STEPS, "nerfstudio-data",
                             "--data", scene), cwd=workdir)  # fmt: skip
    assert f"Resuming the edit from {models}" in flat(resumed.stdout)
    step, final = newest(models)
    assert list(checkpoints_in(models)) == [base_step + RESUME_STEPS] and step > killed_at
    views = len(final["in2n"]["image_sizes"])
    # Passes at the edit's steps 0, 25 and 50, the ones after the kill from the resumed run.
    assert final["in2n"]["schedule"]["views_edited"] == 3 * views
