"""Finding, loading and writing checkpoints: atomically, and with messages that say what to fix."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from in2n.errors import In2nError
from in2n.runs.compat import allow_numpy_in_checkpoints

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
PARTIAL_SUFFIX = ".partial"


def checkpoints_in(folder: Path) -> Dict[int, Path]:
    """The complete checkpoints in a folder, by step (other files are ignored, unlike nerfstudio's loader)."""
    found = {}
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def find_checkpoint(load_dir: Optional[Path], load_step: Optional[int], load_checkpoint: Optional[Path]) -> Path:
    """The checkpoint `--load-dir` / `--load-step` / `--load-checkpoint` designate, or a clear error."""
    if load_checkpoint is not None:
        if not load_checkpoint.is_file():
            raise In2nError(f"--load-checkpoint {load_checkpoint} does not exist. Give the path of a step-*.ckpt file.")
        return load_checkpoint
    if load_dir is None:
        raise In2nError(
            "in2n edits a scene that is already reconstructed, and no checkpoint was given. Train one first with "
            "`ns-train nerfacto --data DATA`, then pass its checkpoint folder: "
            "--load-dir outputs/<scene>/nerfacto/<timestamp>/nerfstudio_models."
        )
    if not load_dir.exists():
        raise In2nError(
            f"--load-dir {load_dir} does not exist. Pass the nerfstudio_models folder of a nerfacto (or in2n) run, "
            "e.g. outputs/<scene>/nerfacto/<timestamp>/nerfstudio_models."
        )
    if load_dir.is_file():
        raise In2nError(
            f"--load-dir {load_dir} is a file. Pass its folder ({load_dir.parent}), or use --load-checkpoint."
        )
    folder = resolve_checkpoint_folder(load_dir)
    found = checkpoints_in(folder)
    if load_step is None:
        return found[max(found)]
    if load_step not in found:
        raise In2nError(
            f"--load-step {load_step}: {folder} has no checkpoint for that step; it has step(s) "
            f"{', '.join(str(s) for s in sorted(found))}."
        )
    return found[load_step]


def resolve_checkpoint_folder(load_dir: Path) -> Path:
    """The folder holding step-*.ckpt files: `load_dir` itself, or the nerfstudio_models folder of a run folder."""
    if checkpoints_in(load_dir):
        return load_dir
    nested = load_dir / "nerfstudio_models"
    if nested.is_dir() and checkpoints_in(nested):
        return nested
    runs = sorted(p.parent for p in load_dir.glob("*/nerfstudio_models") if checkpoints_in(p))
    if len(runs) == 1:
        return runs[0] / "nerfstudio_models"
    if runs:
        listing = "\n".join(f"  {run / 'nerfstudio_models'}" for run in runs)
        raise In2nError(f"--load-dir {load_dir} holds several runs; pass the one to edit:\n{listing}")
    raise In2nError(
        f"--load-dir {load_dir} holds no checkpoint (no step-<number>.ckpt file). Pass the nerfstudio_models folder "
        "of a finished nerfacto run; a run saves its first checkpoint after --steps-per-save steps."
    )


def load_checkpoint_file(path: Path) -> Dict[str, Any]:
    """A nerfstudio checkpoint (nerfacto's or in2n's) read with torch's safe unpickler, or a clear error."""
    allow_numpy_in_checkpoints()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file fails deep inside the unpickler
        raise In2nError(
            f"{path} could not be read as a nerfstudio checkpoint ({type(error).__name__}: {error}). If a run was "
            "killed while saving, delete this file and load the previous one (--load-step)."
        ) from None
    if not isinstance(state, dict) or "pipeline" not in state or "step" not in state:
        raise In2nError(f"{path} is not a nerfstudio checkpoint (no 'pipeline' and 'step' entries).")
    return state


def atomic_save(state: Dict[str, Any], path: Path, scratch_dir: Path) -> None:
    """Write `state` to `path` so that a kill at any moment leaves either the old file set or the new one.

    The temporary file lives outside the checkpoint folder, because nerfstudio's `--load-dir` parses a step
    number out of every file name there.
    """
    scratch_dir.mkdir(parents=True, exist_ok=True)
    partial = scratch_dir / f".{path.name}{PARTIAL_SUFFIX}"
    try:
        with open(partial, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, RuntimeError) as error:
        written = partial.stat().st_size if partial.exists() else 0
        partial.unlink(missing_ok=True)
        if not disk_full(error, scratch_dir, written):
            raise
        raise In2nError(disk_full_message(path, written)) from None
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    # What a run killed while saving left behind: never loadable, so not worth its disk space.
    for stale in scratch_dir.glob(f".step-*.ckpt{PARTIAL_SUFFIX}"):
        stale.unlink(missing_ok=True)


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException, folder: Path, written: int) -> bool:
    """Whether a failed write ran out of space. torch's writer reports it as a RuntimeError ("unexpected pos ...")
    rather than an OSError, so without an errno the free space decides: less than was being written."""
    if isinstance(error, OSError):
        return error.errno in DISK_FULL_ERRNOS
    return shutil.disk_usage(folder).free <= max(written, 1 << 20)


def disk_full_message(path: Path, written: int) -> str:
    """What happened, what is safe, and how to go on."""
    folder = path.parent
    others = {step: p for step, p in checkpoints_in(folder).items() if p != path} if folder.is_dir() else {}
    needed = max([written] + [p.stat().st_size for p in others.values()])
    free = shutil.disk_usage(folder if folder.is_dir() else folder.parent).free
    if others:
        newest = max(others)
        safe = f"The newest complete checkpoint, {others[newest].name} (step {newest}), is intact."
        resume = f"then continue the edit where it stopped: run the same command with --load-dir {folder}"
    else:
        safe = "No earlier checkpoint of this run exists."
        resume = "then run the command again"
    return (
        f"The disk holding {folder} is full: saving {path.name} needs about {megabytes(needed)} and "
        f"{megabytes(free)} is free. The unfinished file was removed. {safe} Free some space (or pass another "
        f"--output-dir), {resume}."
    )


def megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"
