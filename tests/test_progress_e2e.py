"""The edit's progress and convergence with the real ns-train: a run that stops once converged, resuming it, and
in2n-plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.dataset_update.progress import pooled_psnr, read_progress_csv
from in2n.tools.plot import curves
from tests.conftest import (
    NEGATIVE_EDIT_STEPS,
    NEGATIVE_LOG,
    NEGATIVE_OPTIONS,
    in2n_args,
    in2n_run_dir,
    ns,
    run,
)
from tests.helpers import flat, folder_state

pytestmark = pytest.mark.e2e

EDIT_OPTIONS = NEGATIVE_OPTIONS


def checkpoint_of(run_dir: Path):
    return torch.load(max((run_dir / "nerfstudio_models").glob("step-*.ckpt")), weights_only=True)


def test_a_converged_edit_stops_where_the_criterion_says(negative_run: Path):
    run_dir = negative_run
    state = checkpoint_of(run_dir)
    edit = state["in2n"]
    start = edit["edit_start_step"]
    assert state["step"] < start + NEGATIVE_EDIT_STEPS - 1, "it stopped before --max-num-iterations"
    assert edit["stopped_at_length"] == NEGATIVE_EDIT_STEPS
    records = read_progress_csv(run_dir / "edit_progress.csv")
    assert len(records) == edit["schedule"]["views_edited"] == len(edit["progress"]["records"])
    replayed = curves(records, min_passes=5, tolerance=0.1)  # the defaults
    assert replayed.converged_step == state["step"], "the stop step is where the criterion holds"
    passes = sorted(replayed.pass_psnr)
    assert replayed.pass_psnr[passes[1]] > replayed.pass_psnr[passes[0]], "the agreement rises over the first passes"
    output = flat((run_dir / NEGATIVE_LOG).read_text())
    assert f"the edit converged at step {state['step']}" in output and "Traceback" not in output
    # Strata of noise levels: every pass edits each of the 18 strata once.
    first_pass = [r.noise_level for r in records if r.pass_index == 0]
    assert sorted((level - 20) * 18 // 961 for level in first_pass) == list(range(18))
    assert pooled_psnr([r.psnr for r in records if r.pass_index == 0]) == pytest.approx(replayed.pass_psnr[0])


def test_a_converged_edit_resumes_only_when_asked_to_edit_further(negative_run: Path, scene: Path, workdir: Path):
    run_dir = negative_run
    models = run_dir / "nerfstudio_models"
    stopped = checkpoint_of(run_dir)
    before = folder_state(run_dir)
    again = run(in2n_args(models, workdir, "converged-again", "--max-num-iterations", NEGATIVE_EDIT_STEPS,
                          *EDIT_OPTIONS, "--pipeline.stop-when-converged", "True", "nerfstudio-data", "--data", scene),
                cwd=workdir)  # fmt: skip
    output = flat(again.stdout + again.stderr)
    assert again.returncode == 0 and "Traceback" not in output
    assert "this edit converged and stopped" in output and "Nothing was written" in output
    assert not in2n_run_dir(workdir, "converged-again").exists(), "the run folder ns-train made is removed again"
    assert folder_state(run_dir) == before
    further = run(in2n_args(models, workdir, "converged-further", "--max-num-iterations", NEGATIVE_EDIT_STEPS + 1,
                            *EDIT_OPTIONS,
                            "--pipeline.stop-when-converged", "True", "nerfstudio-data", "--data", scene),
                  cwd=workdir)  # fmt: skip
    state = checkpoint_of(in2n_run_dir(workdir, "converged-further"))
    assert state["step"] > stopped["step"]
    assert state["step"] < stopped["in2n"]["edit_start_step"] + NEGATIVE_EDIT_STEPS
    assert "the edit converged at step" in flat(further.stdout), "it edits on, and stops again once converged"
    history = read_progress_csv(in2n_run_dir(workdir, "converged-further") / "edit_progress.csv")
    assert history[: len(stopped["in2n"]["progress"]["records"])][-1].step <= stopped["step"], "the history first"


def test_in2n_plot_draws_the_progress_of_a_run(negative_run: Path, nerfacto_run: Path, workdir: Path):
    run_dir = negative_run
    result = run([ns("in2n-plot"), run_dir], cwd=workdir)
    picture = run_dir / "edit_progress.png"
    assert str(picture) in flat(result.stdout)
    image = np.asarray(Image.open(picture).convert("RGB")).astype(float)
    assert image.shape == (800, 1000, 3), "PSNR and, as in2n trains with LPIPS, LPIPS"
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "not a blank picture"
    refused = run([ns("in2n-plot"), nerfacto_run.parent], cwd=workdir, check=False)
    assert refused.returncode != 0 and "records no edit progress" in flat(refused.stderr)
