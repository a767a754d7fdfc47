"""Finding, loading and writing checkpoints: atomically, and with messages that say what to fix."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import yaml

from in2n.errors import In2nError

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
PARTIAL_SUFFIX = ".partial"
MODEL_FIELDS_WITHOUT_SHAPES = {"_target", "eval_num_rays_per_chunk", "average_init_density"}


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
    with open(partial, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    # What a run killed while saving left behind: never loadable, so not worth its disk space.
    for stale in scratch_dir.glob(f".step-*.ckpt{PARTIAL_SUFFIX}"):
        stale.unlink(missing_ok=True)


def source_run_config(checkpoint: Path) -> Optional[Any]:
    """The config.yml of the run a checkpoint belongs to, if it is there and readable."""
    config_path = checkpoint.parent.parent / "config.yml"
    if not config_path.is_file():
        return None
    try:
        return yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except Exception:  # an unreadable config only costs us the more specific hint
        return None


def differing_model_options(source_model: Any, model: Any) -> List[str]:
    """`--pipeline.model.x value` flags that would make `model` match the checkpoint's model config."""
    flags = []
    ours = {f.name for f in dataclasses.fields(model)}
    for f in dataclasses.fields(source_model):
        if f.name in MODEL_FIELDS_WITHOUT_SHAPES or f.name not in ours:
            continue
        theirs, mine = getattr(source_model, f.name), getattr(model, f.name)
        if theirs != mine and not dataclasses.is_dataclass(theirs):
            flags.append(f"--pipeline.model.{f.name.replace('_', '-')} {theirs}")
    return flags


def mismatch_message(error: RuntimeError, checkpoint: Path, model_config: Any, num_views: int) -> str:
    """Explain a failed load_state_dict: different data, or different model options."""
    text = str(error)
    views = re.search(r"(?:pose_adjustment|embedding_appearance\.embedding\.weight).*?torch\.Size\(\[(\d+)", text)
    if views and int(views.group(1)) != num_views:
        return (
            f"{checkpoint} was trained on {views.group(1)} training views, but --data gives {num_views}. Use the same "
            "--data (and the same dataparser options, e.g. --downscale-factor) as the run that wrote the checkpoint."
        )
    source = source_run_config(checkpoint)
    flags = differing_model_options(source.pipeline.model, model_config) if source is not None else []
    if flags:
        return (
            f"{checkpoint} was trained with different model options. Add these to the command so the model matches "
            f"it: {' '.join(flags)}"
        )
    first_line = next((line.strip() for line in text.splitlines() if "size mismatch" in line or "Missing" in line), "")
    return (
        f"{checkpoint} does not fit this model ({first_line or 'parameters differ'}). Use the same --pipeline.model.* "
        "options as the run that wrote it (see the config.yml next to its nerfstudio_models folder)."
    )
