"""The real commands on a generated scene: ns-train nerfacto -> ns-train in2n -> ns-render, on the CPU, offline."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch

from tests.conftest import in2n_args, in2n_run_dir, ns, run
from tests.helpers import distances, read_rgb

pytestmark = pytest.mark.e2e


def latest_checkpoint(run: Path) -> Path:
    return max((run / "nerfstudio_models").glob("step-*.ckpt"))


@pytest.fixture(scope="module")
def ip2p_run(nerfacto_run: Path, scene: Path, workdir: Path, tiny_ip2p: Path) -> Path:
    """An in2n run that edited with a copy of the tiny InstructPix2Pix, which is deleted afterwards."""
    model = workdir / "ip2p-copy"
    shutil.copytree(tiny_ip2p, model, dirs_exist_ok=True)
    run(in2n_args(nerfacto_run, workdir, "ip2p", "--max-num-iterations", "6", "--pipeline.edit-rate", "1",
                  "--pipeline.edit-count", "2", "--pipeline.diffusion-steps", "3",
                  "--pipeline.prompt", "give it a cowboy hat", "--pipeline.ip2p-model", model,
                  "nerfstudio-data", "--data", scene), cwd=workdir)  # fmt: skip
    shutil.rmtree(model)
    return in2n_run_dir(workdir, "ip2p")


def test_in2n_edits_views_and_checkpoints_no_diffusion_weights(ip2p_run: Path, nerfacto_run: Path, scene: Path):
    checkpoint_path = latest_checkpoint(ip2p_run)
    nerfacto_step = int(next(nerfacto_run.glob("step-*.ckpt")).stem.split("-")[1])
    assert checkpoint_path.name == f"step-{nerfacto_step + 6:09d}.ckpt", "the edit runs --max-num-iterations steps"
    state = torch.load(checkpoint_path, weights_only=True)
    keys = list(state["pipeline"])
    assert not [k for k in keys if any(part in k for part in ("unet", "vae", "text_encoder"))]
    nerfacto_size = next(nerfacto_run.glob("step-*.ckpt")).stat().st_size
    assert checkpoint_path.stat().st_size < nerfacto_size * 1.2, "no diffusion model inside"
    edit = state["in2n"]
    assert len(edit["edited_views"]) == 12 and edit["schedule"]["views_edited"] == 12
    assert edit["prompt"] == "give it a cowboy hat"
    frames = sorted((scene / "images").glob("*.png"))
    train_names = [p.name for p in frames]  # dataset images on disk are never modified
    assert len(train_names) == 20
    for image in edit["edited_images"]:
        assert image.shape == (48, 64, 3) and image.dtype == torch.uint8
    originals = [read_rgb(p) for p in frames]
    edited = [image.float() / 255 for image in edit["edited_images"]]
    assert all(min((e - o).abs().mean() for o in originals) > 0.01 for e in edited), "edited views differ"


def test_ns_render_renders_the_edit_without_the_diffusion_model_or_the_alexnet_file(ip2p_run: Path, workdir: Path):
    output = workdir / "renders-ip2p"
    no_weights = workdir / "torch-home-without-alexnet"  # and the hub is offline: nothing can be downloaded
    result = render_test_views(ip2p_run / "config.yml", output, workdir, env={"TORCH_HOME": str(no_weights)})
    assert not no_weights.exists() or not list(no_weights.rglob("*.pth"))
    images = sorted(output.rglob("*.png"))
    assert len(images) == 2, result.stdout[-2000:]
    for path in images:
        image = read_rgb(path)
        assert image.shape == (48, 64, 3) and image.std() > 0.02, "a scene, not a blank frame"
    assert "InstructPix2Pix" not in result.stdout + result.stderr


def test_negative_edit_moves_held_out_views_to_the_target(
    negative_run: Path, nerfacto_run: Path, scene: Path, workdir: Path
):
    """Views the edit never saw (the eval split) render close to the edited target after the edit, not before."""
    scores = {}
    for name, config in (("before", nerfacto_run.parent / "config.yml"),
                         ("after", negative_run / "config.yml")):  # fmt: skip
        output = workdir / f"renders-{name}"
        render_test_views(config, output, workdir)
        renders = sorted(output.rglob("*.png"))
        assert len(renders) == 2
        scores[name] = [distances(read_rgb(path), read_rgb(scene / "images" / path.name)) for path in renders]
    for to_original, to_target in scores["before"]:
        assert to_original < 0.5 * to_target, scores
    for to_original, to_target in scores["after"]:
        assert to_target < 0.5 * to_original, scores


def render_test_views(config: Path, output: Path, workdir: Path, env: Optional[Dict[str, str]] = None):
    return run([ns("ns-render"), "dataset", "--load-config", config, "--output-path", output, "--split", "test",
                "--rendered-output-names", "rgb", "--image-format", "png"], cwd=workdir, env=env)  # fmt: skip
