"""Faults a user runs into, with the real ns-train: a full disk during a save, a --data that is not a dataset. Each
gives one message, no traceback, and loses nothing. (A finished edit run again: tests/test_resume.py; a converged one:
tests/test_progress_e2e.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from in2n.runs.checkpoints import load_checkpoint_file
from tests.conftest import in2n_args, in2n_run_dir, run
from tests.helpers import flat

pytestmark = pytest.mark.e2e


def error_message(result: subprocess.CompletedProcess) -> str:
    """The message of the in2n error a command stopped with (after whatever it printed before)."""
    text = flat(result.stderr)
    assert "in2n: error: " in text, text[-3000:]
    return text[text.index("in2n: error: ") + len("in2n: error: ") :]


def test_a_full_disk_during_a_save_keeps_the_last_checkpoint(
    nerfacto_run: Path, scene: Path, workdir: Path, tmp_path: Path
):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs as the full disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    # Room for the run's small files and one checkpoint, not for the next one beside it.
    checkpoint_size = next(nerfacto_run.glob("step-*.ckpt")).stat().st_size
    size_kb = int(1.5 * checkpoint_size / 1024) + 512
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(disk)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        args = in2n_args(nerfacto_run, disk, "full", "--max-num-iterations", "8", "--steps-per-save", "2",
                         "--pipeline.editor", "negative", "--pipeline.edit-rate", "1",
                         "nerfstudio-data", "--data", scene)  # fmt: skip
        result = run(args, cwd=workdir, check=False)
        message = error_message(result)
        run_dir = in2n_run_dir(disk, "full")
        left = sorted(p.name for p in (run_dir / "nerfstudio_models").iterdir())
        partials = [p for p in run_dir.rglob("*") if p.name.endswith(".partial")]
        newest = load_checkpoint_file(run_dir / "nerfstudio_models" / left[0]) if left else None
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert message.startswith("The disk holding"), message
    assert "is full" in message and "The unfinished file was removed" in message
    assert len(left) == 1 and newest is not None and newest["in2n"]["edited_views"], left
    assert f"{left[0]} (step {newest['step']}), is intact" in message
    assert "run the same command with --load-dir" in message and partials == []


def test_data_that_is_not_a_dataset_is_named_before_anything_loads(nerfacto_run: Path, workdir: Path, tmp_path: Path):
    photos = tmp_path / "my-photos"
    photos.mkdir()
    result = run(in2n_args(nerfacto_run, workdir, "no-data", "--pipeline.editor", "negative",
                           "nerfstudio-data", "--data", photos), cwd=workdir, check=False)  # fmt: skip
    message = error_message(result)
    assert result.returncode != 0 and "Traceback" not in result.stdout + result.stderr
    assert message.startswith(f"--data {photos} is not a nerfstudio dataset: it holds no transforms.json")
    assert "ns-process-data images" in message
    assert "Setting up training dataset" not in result.stdout, "it stopped before loading anything"
