"""Every user mistake gets one clear paragraph saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from in2n.editors.devices import resolve_device
from in2n.editors.factory import EditorConfig, build_editor
from in2n.editors.loading import load_ip2p_pipeline
from in2n.errors import In2nError, format_error
from in2n.model import In2nModel
from in2n.runs.checkpoints import find_checkpoint, load_checkpoint_file
from tests.conftest import ns
from tests.pipelines import pipeline_config


def problems_of(scene: Path, **options) -> str:
    with pytest.raises(In2nError) as caught:
        pipeline_config(scene, **options).check()
    return str(caught.value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"prompt": "  ", "editor": "ip2p"}, "--pipeline.prompt is empty"),
        ({"prompt": "x" * 5000}, "--pipeline.prompt is 5000 characters long"),
        ({"guidance_scale": -1.0}, "--pipeline.guidance-scale is -1.0; it must be 0 or more"),
        ({"image_guidance_scale": float("nan")}, "--pipeline.image-guidance-scale is nan"),
        ({"lower_bound": -0.1}, "--pipeline.lower-bound is -0.1; noise-level bounds are fractions between 0 and 1"),
        ({"upper_bound": 1.5}, "--pipeline.upper-bound is 1.5"),
        ({"lower_bound": 0.9, "upper_bound": 0.2}, "--pipeline.lower-bound 0.9 is above --pipeline.upper-bound 0.2"),
        ({"edit_rate": 0}, "--pipeline.edit-rate is 0; it must be at least 1"),
        ({"edit_count": -2}, "--pipeline.edit-count is -2"),
        ({"diffusion_steps": 0}, "--pipeline.diffusion-steps is 0"),
        ({"max_edit_size": 32}, "--pipeline.max-edit-size is 32; use at least 64, or leave it unset for the editor's"),
        ({"ip2p_device": "cuda:7", "editor": "ip2p"}, "--pipeline.ip2p-device cuda:7"),
        (
            {"ip2p_device": "gpu-please", "editor": "ip2p"},
            "--pipeline.ip2p-device gpu-please: not a device name. Use cpu, cuda, cuda:N",
        ),
    ],
)
def test_bad_pipeline_options_are_named_with_a_fix(scene: Path, options: dict, expected: str) -> None:
    assert expected in problems_of(scene, **options)


def test_all_problems_are_reported_at_once(scene: Path) -> None:
    message = problems_of(scene, edit_rate=0, diffusion_steps=0, guidance_scale=-1.0)
    assert message.count("\n") == 2


def test_patch_options_must_agree(scene: Path) -> None:
    config = pipeline_config(scene)
    config.datamanager.patch_size = 16
    with pytest.raises(In2nError, match="patch-size 16 and --pipeline.model.patch-size 32 differ"):
        config.check()
    config = pipeline_config(scene)
    config.datamanager.patch_size = config.model.patch_size = 1
    with pytest.raises(In2nError, match="LPIPS needs ray patches"):
        config.check()
    config = pipeline_config(scene)
    config.datamanager.train_num_rays_per_batch = 500
    with pytest.raises(In2nError, match="less than one 32x32 patch; use a multiple of 1024"):
        config.check()


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(In2nError, match="no CUDA device is available on this machine"):
            resolve_device("cuda")


def test_missing_load_dir_and_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(In2nError, match="Train one first with `ns-train nerfacto --data DATA`"):
        find_checkpoint(None, None, None)
    with pytest.raises(In2nError, match="does not exist. Pass the nerfstudio_models folder"):
        find_checkpoint(tmp_path / "nowhere", None, None)
    with pytest.raises(In2nError, match="holds no checkpoint"):
        find_checkpoint(tmp_path, None, None)
    with pytest.raises(In2nError, match="--load-checkpoint .* does not exist"):
        find_checkpoint(None, None, tmp_path / "step-1.ckpt")


def test_load_dir_accepts_a_run_folder_and_ignores_stray_files(tmp_path: Path) -> None:
    models = tmp_path / "run" / "nerfstudio_models"
    models.mkdir(parents=True)
    for step in (100, 300):
        (models / f"step-{step:09d}.ckpt").write_bytes(b"x")
    (models / "notes.txt").write_text("left by the user")
    (models / ".step-000000400.ckpt.partial").write_bytes(b"x")
    assert find_checkpoint(models, None, None).name == "step-000000300.ckpt"
    assert find_checkpoint(tmp_path / "run", None, None) == models / "step-000000300.ckpt"
    assert find_checkpoint(tmp_path, None, None) == models / "step-000000300.ckpt"
    assert find_checkpoint(models, 100, None).name == "step-000000100.ckpt"
    with pytest.raises(In2nError, match="has no checkpoint for that step; it has step\\(s\\) 100, 300"):
        find_checkpoint(models, 200, None)
    second = tmp_path / "run2" / "nerfstudio_models"
    second.mkdir(parents=True)
    (second / "step-000000001.ckpt").write_bytes(b"x")
    with pytest.raises(In2nError, match="holds several runs; pass the one to edit"):
        find_checkpoint(tmp_path, None, None)


def test_a_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "step-000000001.ckpt"
    path.write_bytes(b"truncated")
    with pytest.raises(In2nError, match="could not be read as a nerfstudio checkpoint"):
        load_checkpoint_file(path)


def test_missing_diffusion_weights_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(In2nError) as caught:
        load_ip2p_pipeline("timbrooks/instruct-pix2pix", torch.float32)
    message = str(caught.value)
    # The loader names the model; the option that named it is attached where options are read (the factory).
    assert message.startswith("timbrooks/instruct-pix2pix: could not load the InstructPix2Pix weights")
    assert "HF_HUB_OFFLINE=1" in message and "or give a folder saved with" in message and "--pipeline" not in message
    with pytest.raises(In2nError, match="^--pipeline.ip2p-model timbrooks/instruct-pix2pix: could not load"):
        build_editor(EditorConfig(ip2p_model="timbrooks/instruct-pix2pix"), "cpu")
    with pytest.raises(In2nError, match="no such folder"):
        load_ip2p_pipeline(str(tmp_path / "models" / "mine"), torch.float32)
    with pytest.raises(In2nError, match="holds no model_index.json"):
        load_ip2p_pipeline(str(tmp_path), torch.float32)


def test_the_model_needs_no_alexnet_file_and_takes_lpips_weights_from_the_checkpoint(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no AlexNet here, and the hub is offline
    config = pipeline_config(scene).model
    box = SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    trained, fresh = (In2nModel(config, scene_box=box, num_train_data=4) for _ in range(2))
    assert not list(tmp_path.rglob("*.pth")), "nothing was downloaded or written"
    with torch.no_grad():
        for parameter in trained.lpips.parameters():
            parameter.normal_()
    fresh.load_state_dict(trained.state_dict())
    for (name, theirs), ours in zip(trained.lpips.state_dict().items(), fresh.lpips.state_dict().values(), strict=True):
        assert torch.equal(theirs, ours), name


def test_format_error_is_one_prefixed_paragraph() -> None:
    text = format_error(In2nError("x " * 80))
    assert text.startswith("in2n: error: ") and all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.e2e
def test_ns_train_without_load_dir_prints_the_message_without_traceback(scene: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [ns("ns-train"), "in2n", "--machine.device-type", "cpu", "--vis", "tensorboard", "--output-dir",
         str(tmp_path), "--pipeline.editor", "negative", "nerfstudio-data", "--data", str(scene)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "in2n: error: in2n edits a scene that is already reconstructed" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
