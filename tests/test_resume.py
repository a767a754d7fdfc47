"""`ns-train in2n` killed with SIGKILL at any moment, in the middle of a save included, loses no finished work:
the newest complete checkpoint loads, and resuming continues the edit where it stopped."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any, Dict, List

import pytest

from in2n.runs.checkpoints import PARTIAL_SUFFIX, checkpoints_in, load_checkpoint_file
from tests.conftest import SCENE, in2n_args, in2n_run_dir, run
from tests.helpers import flat, folder_state
from tests.processes import start_process_group, wait_until

pytestmark = pytest.mark.e2e

EDIT_STEPS = 40
SAVE_EVERY = 5
EDIT_COUNT = 2
RUN_NAME = "killed"
TIMEOUT_S = 600
POLL_S = 0.05
"""Short, so that the first kill lands soon after the third save."""


def edit_args(load_dir: Path, workdir: Path, scene: Path) -> List[Any]:
    return in2n_args(load_dir, workdir, RUN_NAME, "--max-num-iterations", EDIT_STEPS, "--steps-per-save", SAVE_EVERY,
                     "--pipeline.editor", "negative", "--pipeline.edit-rate", "1",
                     "--pipeline.edit-count", EDIT_COUNT, "--steps-per-eval-image", "1000",
                     "--steps-per-eval-batch", "1000", "nerfstudio-data", "--data", scene)  # fmt: skip


def newest_state(models: Path) -> Dict[str, Any]:
    """The newest checkpoint of a folder, which must load (with torch's safe unpickler)."""
    found = checkpoints_in(models)
    assert found, f"no checkpoint in {models}"
    return load_checkpoint_file(found[max(found)])


def kill(process) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def read_some_of_a_save(fifo: Path, process, log: Path) -> bytes:
    """Wait until the trainer writes the checkpoint into `fifo` (a named pipe in place of its temporary file) and
    return the first bytes; the trainer is then blocked inside the save, with the pipe full."""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    received: List[bytes] = []

    def some_bytes_arrived() -> bool:
        try:
            chunk = os.read(reader, 1 << 16)
        except BlockingIOError:  # the trainer opened the file and has not written yet
            return False
        received.append(chunk)
        return bool(chunk)

    try:
        wait_until(some_bytes_arrived, process, TIMEOUT_S, "the trainer to write a checkpoint", log, POLL_S)
    finally:
        os.close(reader)
    return b"".join(received)


def expected_views_edited(state: Dict[str, Any], edit_start_step: int) -> int:
    """An edit of EDIT_COUNT views at every step from the start of the edit up to the checkpoint's step."""
    return (int(state["step"]) - edit_start_step + 1) * EDIT_COUNT


def test_killed_runs_resume_their_edit_and_a_kill_during_a_save_corrupts_nothing(
    nerfacto_run: Path, scene: Path, workdir: Path
) -> None:
    run_dir = in2n_run_dir(workdir, RUN_NAME)
    models = run_dir / "nerfstudio_models"
    nerfacto_step = int(newest_state(nerfacto_run)["step"])
    edit_start = nerfacto_step + 1
    logs = [workdir / f"{RUN_NAME}-{attempt}.log" for attempt in range(3)]

    # 1. Killed at an arbitrary moment after a few saves.
    with open(logs[0], "w") as log:
        process = start_process_group(edit_args(nerfacto_run, workdir, scene), log, cwd=workdir)
    wait_until(lambda: models.is_dir() and max(checkpoints_in(models), default=0) >= nerfacto_step + 3 * SAVE_EVERY,
               process, TIMEOUT_S, "three checkpoints", logs[0], POLL_S)  # fmt: skip
    kill(process)
    first = newest_state(models)
    assert first["in2n"]["edit_start_step"] == edit_start
    assert first["in2n"]["schedule"]["views_edited"] == expected_views_edited(first, edit_start)
    assert len(first["in2n"]["edited_images"]) == len(first["in2n"]["edited_views"]) > 0

    # 2. Resumed, then killed in the middle of writing its first checkpoint.
    saving_step = int(first["step"]) + SAVE_EVERY
    partial = run_dir / f".step-{saving_step:09d}.ckpt{PARTIAL_SUFFIX}"
    os.mkfifo(partial)
    with open(logs[1], "w") as log:
        process = start_process_group(edit_args(models, workdir, scene), log, cwd=workdir)
    written = read_some_of_a_save(partial, process, logs[1])
    kill(process)
    # What the kill leaves on disk: the first bytes of the checkpoint in its temporary file.
    partial.unlink()
    partial.write_bytes(written)
    resumed_log = logs[1].read_text()
    assert f"Resuming the edit from {models}" in " ".join(resumed_log.split())
    assert f"{len(first['in2n']['edited_views'])} views edited" in " ".join(resumed_log.split())
    intact = newest_state(models)
    assert intact["step"] == first["step"], "the checkpoint the killed run resumed from is the newest"
    assert intact["in2n"]["edited_views"] == first["in2n"]["edited_views"]

    # 3. Resumed to the end: the edit stops where an uninterrupted one would, with every edit counted once.
    result = run(edit_args(models, workdir, scene), cwd=workdir)
    logs[2].write_text(result.stdout + result.stderr)
    final = newest_state(models)
    assert list(checkpoints_in(models)) == [nerfacto_step + EDIT_STEPS]
    assert final["in2n"]["edit_start_step"] == edit_start
    schedule = final["in2n"]["schedule"]
    assert schedule["views_edited"] == EDIT_STEPS * EDIT_COUNT
    train_views = len(final["in2n"]["image_sizes"])
    assert 0 < train_views < SCENE.num_views
    assert schedule["passes_completed"] == EDIT_STEPS * EDIT_COUNT // train_views
    assert sorted(final["in2n"]["edited_views"]) == list(range(train_views))
    assert not list(run_dir.glob(f"*{PARTIAL_SUFFIX}")), "the interrupted save's temporary file is cleaned up"
    assert not [p for p in models.iterdir() if not re.fullmatch(r"step-\d+\.ckpt", p.name)]

    # 4. Run again once finished: it says so, writes nothing, and removes the new run folder ns-train made.
    before = folder_state(run_dir)
    again = run(in2n_args(models, workdir, "again", "--max-num-iterations", EDIT_STEPS, "--pipeline.editor", "negative",
                          "nerfstudio-data", "--data", scene), cwd=workdir)  # fmt: skip
    output = flat(again.stdout + again.stderr)
    assert again.returncode == 0 and "Traceback" not in output
    assert f"this edit already ran its {EDIT_STEPS} steps" in output and "Nothing was written" in output
    assert not in2n_run_dir(workdir, "again").exists(), "the run folder ns-train made is removed again"
    assert folder_state(run_dir) == before
