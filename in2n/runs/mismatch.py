"""Why a checkpoint does not fit the run that loads it: other data, or other model options, in plain words."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Dict, List

from in2n.runs.folder import run_of_checkpoint

MODEL_FIELDS_WITHOUT_SHAPES = {"_target", "eval_num_rays_per_chunk", "average_init_density"}
"""Model options that do not change the shapes of the weights, so they may differ from the checkpoint's run."""
MODEL_FIELDS_FROM_SOURCE = (
    "average_init_density",
    "sh_degree",
    "rasterize_mode",
    "use_bilateral_grid",
    "grid_shape",
    "camera_optimizer.mode",
)
"""Model options a run that edits a checkpoint takes from the checkpoint's run, because its weights need them.
nerfacto's field scales every density by `average_init_density` (nerfacto trains with 0.01, depth-nerfacto with 1.0),
and weights run with another value render the scene as fog. splatfacto's spherical harmonics degree, bilateral grids
and camera optimizer decide which parameters the checkpoint holds, and Gaussians trained antialiased render wrong in
classic mode and the reverse. Dotted names are fields of nested configs."""


def source_model_options(source_model: Any, model: Any) -> Dict[str, Any]:
    """The MODEL_FIELDS_FROM_SOURCE values of the checkpoint's model config that differ from `model`'s, by dotted
    name."""
    options = {}
    for name in MODEL_FIELDS_FROM_SOURCE:
        theirs, ours = nested_field(source_model, name), nested_field(model, name)
        if theirs is not MISSING and ours is not MISSING and theirs != ours:
            options[name] = theirs
    return options


MISSING = object()


def nested_field(config: Any, name: str) -> Any:
    """`config.a.b` for the name "a.b"; MISSING where a part is not there."""
    for part in name.split("."):
        config = getattr(config, part, MISSING)
        if config is MISSING:
            break
    return config


def set_nested_field(config: Any, name: str, value: Any) -> None:
    *parents, last = name.split(".")
    for part in parents:
        config = getattr(config, part)
    setattr(config, last, value)


def flag_value(value: Any) -> str:
    """A value as ns-train takes it on the command line (tuples as separate words)."""
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


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
    views = re.search(
        r"(?:pose_adjustment|embedding_appearance\.embedding\.weight|bil_grids\.grids).*?torch\.Size\(\[(\d+)", text
    )
    if views and int(views.group(1)) != num_views:
        return (
            f"{checkpoint} was trained on {views.group(1)} training views, but --data gives {num_views}. Use the same "
            "--data (and the same dataparser options, e.g. --downscale-factor) as the run that wrote the checkpoint."
        )
    source = run_of_checkpoint(checkpoint)
    flags = differing_model_options(source.config.pipeline.model, model_config) if source is not None else []
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
