"""`ns-train in2n` with an SDXL InstructPix2Pix (the tiny random one) edits views, checkpoints no diffusion weights, and
resumes its edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest
import torch

from in2n.runs.checkpoints import checkpoints_in, load_checkpoint_file
from tests.conftest import in2n_args, in2n_run_dir, run
from tests.helpers import flat

pytestmark = pytest.mark.e2e

RUN_NAME = "sdxl"
EDIT_COUNT = 2
FIRST_STEPS, ALL_STEPS = 2, 4


def sdxl_args(load_dir: Path, workdir: Path, scene: Path, model: Path, steps: int) -> List[Any]:
    return in2n_args(load_dir, workdir, RUN_NAME, "--max-num-iterations", steps, "--pipeline.edit-rate", "1",
                     "--pipeline.edit-count", EDIT_COUNT, "--pipeline.diffusion-steps", "2",
                     "--pipeline.prompt", "make it autumn", "--pipeline.ip2p-model", model,
                     "--steps-per-eval-image", "1000", "--steps-per-eval-batch", "1000",
                     "nerfstudio-data", "--data", scene)  # fmt: skip


def test_an_sdxl_editor_edits_and_resumes(nerfacto_run: Path, scene: Path, workdir: Path, tiny_sdxl_ip2p: Path):
    models = in2n_run_dir(workdir, RUN_NAME) / "nerfstudio_models"
    nerfacto_step = max(checkpoints_in(nerfacto_run))

    first = run(sdxl_args(nerfacto_run, workdir, scene, tiny_sdxl_ip2p, FIRST_STEPS), cwd=workdir)
    assert f"editing with SDXL InstructPix2Pix {tiny_sdxl_ip2p} (fp32 on cpu)" in flat(first.stdout)
    stopped = load_checkpoint_file(checkpoints_in(models)[max(checkpoints_in(models))])
    assert stopped["step"] == nerfacto_step + FIRST_STEPS
    assert stopped["in2n"]["schedule"]["views_edited"] == FIRST_STEPS * EDIT_COUNT
    assert not [key for key in stopped["pipeline"] if "unet" in key or "vae" in key or "text_encoder" in key]

    resumed = run(sdxl_args(models, workdir, scene, tiny_sdxl_ip2p, ALL_STEPS), cwd=workdir)
    assert f"Resuming the edit from {models}" in flat(resumed.stdout + resumed.stderr)
    final = load_checkpoint_file(checkpoints_in(models)[max(checkpoints_in(models))])
    assert final["step"] == nerfacto_step + ALL_STEPS
    assert final["in2n"]["edit_start_step"] == stopped["in2n"]["edit_start_step"] == nerfacto_step + 1
    assert final["in2n"]["schedule"]["views_edited"] == ALL_STEPS * EDIT_COUNT
    assert set(stopped["in2n"]["edited_views"]) < set(final["in2n"]["edited_views"])
    before = dict(zip(stopped["in2n"]["edited_views"], stopped["in2n"]["edited_images"], strict=True))
    after = dict(zip(final["in2n"]["edited_views"], final["in2n"]["edited_images"], strict=True))
    # One pass edits every view once: the views edited before the stop are not edited again, and come back as saved.
    assert all(torch.equal(after[view], image) for view, image in before.items())
