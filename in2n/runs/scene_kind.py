"""What a run's scene is made of, a NeRF or Gaussian splats, and the message when an edit is given the other kind.

An edit method loads the checkpoint of the run it edits; a NeRF's weights into splatfacto, or splats into nerfacto,
fail deep inside torch or, worse, load nothing and train a blank scene. The kind is read from the run's config.yml
before anything loads, and from the checkpoint's parameters when it is loaded (a checkpoint without its config.yml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from nerfstudio.models.nerfacto import NerfactoModelConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig

from in2n.errors import In2nError


@dataclass(frozen=True)
class SceneKind:
    """A kind of scene and the commands that make and edit it."""

    name: str
    """What the scene is made of, in words."""
    trained_by: str
    """The nerfstudio method that reconstructs it."""
    edited_by: str
    """The in2n method that edits it."""
    train_command: str
    """How to reconstruct one."""


NERF = SceneKind("a NeRF", "nerfacto", "in2n", "`ns-train nerfacto --data DATA`")
SPLATS = SceneKind(
    "Gaussian splats",
    "splatfacto",
    "in2n-splat",
    "`ns-train splatfacto --data DATA` (`ns-train in2n-splatfacto --data DATA` on a machine without a GPU)",
)
SPLAT_PARAMETER = "_model.gauss_params.means"
"""A splatfacto checkpoint's Gaussian centres (older ones: `_model.means`)."""
NERF_PARAMETER_PREFIX = "_model.field."
"""nerfacto's field, the NeRF itself."""


def model_kind(model_config: Any) -> Optional[SceneKind]:
    """The kind of scene a model config builds, if it is one in2n edits."""
    if isinstance(model_config, SplatfactoModelConfig):
        return SPLATS
    if isinstance(model_config, NerfactoModelConfig):
        return NERF
    return None


def checkpoint_kind(pipeline_state: Mapping[str, Any]) -> Optional[SceneKind]:
    """The kind of scene a checkpoint's pipeline state holds, if it is one in2n edits."""
    if SPLAT_PARAMETER in pipeline_state or "_model.means" in pipeline_state:
        return SPLATS
    if any(key.startswith(NERF_PARAMETER_PREFIX) for key in pipeline_state):
        return NERF
    return None


def check_kind(method: str, wanted: Optional[SceneKind], found: Optional[SceneKind], checkpoint: Path) -> None:
    """Raise an In2nError when the checkpoint's scene is not of the kind the method edits."""
    if wanted is None or found is None or wanted == found:
        return
    raise In2nError(
        f"{checkpoint} holds {found.name} (a {found.trained_by} run), but {method} edits {wanted.name}. Edit this run "
        f"with `ns-train {found.edited_by} --load-dir {checkpoint.parent}`, or give {method} a {wanted.trained_by} "
        f"run: train one with {wanted.train_command} and pass its nerfstudio_models folder to --load-dir."
    )
