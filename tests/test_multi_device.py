"""`ns-train in2n --machine.num-devices 2` on the CPU (two processes over gloo), end to end with the negative editor:
the same views are edited at the same steps as on one device, rank 0 alone writes the checkpoint, which holds the
whole edit, and the edit continues on one device from two and on two from one."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from in2n.dataset_update.state import EditState
from in2n.runs.checkpoints import checkpoints_in, load_checkpoint_file
from tests.conftest import NERFACTO_STEPS, SCENE, in2n_args, in2n_run_dir, run
from tests.helpers import flat
from tests.processes import start_process_group, stop_process_group, wait_until

pytestmark = pytest.mark.e2e

EDIT_STEPS = 3
RESUMED_STEPS = 5
EDIT_COUNT = 4
OPTIONS = ["--pipeline.editor", "negative", "--pipeline.edit-rate", "1", "--pipeline.edit-count", EDIT_COUNT,
           "--steps-per-eval-image", "1000", "--steps-per-eval-batch", "1000",
           "--pipeline.datamanager.train-num-rays-per-batch", "2048"]  # fmt: skip
"""Four views edited every step; two 32x32 LPIPS patches a step, one for each process."""
TWO_DEVICES = ["--machine.num-devices", "2"]
TRAINING_VIEWS = SCENE.num_views - 2  # nerfstudio holds 10% of the views out


def edit(load_dir: Path, workdir: Path, scene: Path, name: str, steps: int, *extra: Any) -> Path:
    """Run the edit and return its run folder."""
    run(in2n_args(load_dir, workdir, name, "--max-num-iterations", steps, *OPTIONS, *extra,
                  "nerfstudio-data", "--data", scene), cwd=workdir)  # fmt: skip
    return in2n_run_dir(workdir, name)


def schedule_rows(run_dir: Path) -> List[List[str]]:
    """edit_progress.csv's step, view, pass and noise level of every edit."""
    with open(run_dir / "edit_progress.csv", newline="") as handle:
        return [row[:4] for row in csv.reader(handle)][1:]


def only_checkpoint(run_dir: Path) -> Dict[str, Any]:
    models = run_dir / "nerfstudio_models"
    found = checkpoints_in(models)
    assert len(found) == 1 and [p.name for p in models.iterdir()] == [found[max(found)].name], "one complete file"
    return load_checkpoint_file(found[max(found)])


def test_an_edit_on_two_processes_edits_as_one_and_resumes_on_any_number(
    nerfacto_run: Path, scene: Path, workdir: Path
) -> None:
    one = edit(nerfacto_run, workdir, scene, "devices-1", EDIT_STEPS)
    two = edit(nerfacto_run, workdir, scene, "devices-2", EDIT_STEPS, *TWO_DEVICES)

    rows = schedule_rows(one)
    assert len(rows) == EDIT_STEPS * EDIT_COUNT
    assert schedule_rows(two) == rows, "the same views, passes and noise levels at the same steps"
    assert len(list(two.glob("events.out.tfevents*"))) == 1, "rank 0 alone logs"

    state_one, state_two = only_checkpoint(one), only_checkpoint(two)
    assert state_two["step"] == state_one["step"] == NERFACTO_STEPS - 1 + EDIT_STEPS
    assert not any(".module." in key for key in state_two["pipeline"]), "a checkpoint reads the same on any devices"
    edits_one, edits_two = EditState.of_checkpoint(state_one), EditState.of_checkpoint(state_two)
    assert edits_one is not None and edits_two is not None
    assert edits_two.edited_views == edits_one.edited_views and len(edits_two.edited_views) == len(rows)
    assert edits_two.schedule == edits_one.schedule
    # The first edits are made of renders of the same nerfacto checkpoint, before the two runs train differently.
    for view in [int(row[1]) for row in rows[:EDIT_COUNT]]:
        assert torch.equal(edits_two.edited_images[view], edits_one.edited_images[view]), view

    two_then_one = edit(two / "nerfstudio_models", workdir, scene, "devices-2-then-1", RESUMED_STEPS)
    one_then_two = edit(one / "nerfstudio_models", workdir, scene, "devices-1-then-2", RESUMED_STEPS, *TWO_DEVICES)
    check_resumed(rows, two_then_one, one_then_two)


def check_resumed(rows: List[List[str]], two_then_one: Path, one_then_two: Path) -> None:
    """The edits of `rows` continued from two devices on one and from one on two: the same edits at the same steps,
    to the end of the edit."""
    continued = schedule_rows(two_then_one)
    assert continued[: len(rows)] == rows, "the history of the run resumed"
    first = NERFACTO_STEPS
    assert sorted({int(row[0]) for row in continued}) == list(range(first, first + RESUMED_STEPS))
    assert schedule_rows(one_then_two) == continued
    for resumed in (two_then_one, one_then_two):
        state = only_checkpoint(resumed)
        assert state["step"] == NERFACTO_STEPS - 1 + RESUMED_STEPS
        edits = EditState.of_checkpoint(state)
        assert edits is not None and edits.edited_views == list(range(TRAINING_VIEWS)), "every view edited"


def test_options_two_processes_cannot_run_are_refused_before_anything_is_written(
    nerfacto_run: Path, scene: Path, workdir: Path
) -> None:
    args = in2n_args(nerfacto_run, workdir, "devices-refused", "--pipeline.editor", "negative", *TWO_DEVICES,
                     "nerfstudio-data", "--data", scene)  # fmt: skip
    result = run(args, cwd=workdir, check=False)
    assert result.returncode != 0
    message = flat(result.stderr)
    assert "--machine.num-devices 2 shares each step's rays out among the devices" in message
    assert "Use a multiple of 2048 rays" in message and "Traceback" not in result.stderr
    assert not in2n_run_dir(workdir, "devices-refused").exists()


def rank_processes(pid: int) -> List[int]:
    """The processes ns-train `pid` spawned for the ranks, in the order it started them."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes())


def test_a_process_killed_ends_the_run_with_one_message_and_a_complete_checkpoint(
    nerfacto_run: Path, scene: Path, workdir: Path, tmp_path: Path
) -> None:
    args = in2n_args(nerfacto_run, workdir, "devices-killed", "--max-num-iterations", 200, "--steps-per-save", 1,
                     *OPTIONS, *TWO_DEVICES, "nerfstudio-data", "--data", scene)  # fmt: skip
    models = in2n_run_dir(workdir, "devices-killed") / "nerfstudio_models"
    log_path = tmp_path / "ns-train.log"
    with open(log_path, "w") as log:
        process = start_process_group(args, log, cwd=workdir)
        try:
            wait_until(lambda: models.is_dir() and bool(checkpoints_in(models)), process, 600, "a checkpoint", log_path)
            os.kill(rank_processes(process.pid)[-1], signal.SIGKILL)
            assert process.wait(300) != 0
        finally:
            stop_process_group(process)
    text = log_path.read_text()
    message = flat(text)
    assert message.count("in2n: error:") == 1 and "Traceback" not in text, text[-3000:]
    assert "in2n: error: process " in message and "the other processes were stopped with it" in message
    assert f"is complete. To continue the edit, run the same command with --load-dir {models}" in message
    found = checkpoints_in(models)
    assert EditState.of_checkpoint(load_checkpoint_file(found[max(found)])) is not None
