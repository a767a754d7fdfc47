"""Image strips of edits for the training logger: original | render | edited, side by side.

They show in tensorboard, wandb or comet how each view's edit evolves, without the viewer. The render and the
original are already computed for the edit, so a strip costs only a copy and the logger's PNG encoding.
"""

from __future__ import annotations

from typing import Sequence

# nerfstudio's writer and base_config import each other; importing the writer first fails.
import nerfstudio.configs.base_config  # noqa: F401
import torch
from nerfstudio.utils import writer
from torch import Tensor

STRIP_GROUP = "in2n_edit_strips"
"""Logger section the strips appear under, one image series per view."""


def edit_strip(original: Tensor, render: Tensor, edited: Tensor) -> Tensor:
    """Three images [3, H, W] side by side, as the logger takes them: [H, 3W, 3] floats in [0, 1]."""
    return torch.cat([original, render, edited], dim=2).clamp(0.0, 1.0).permute(1, 2, 0)


def strip_name(view: int) -> str:
    return f"{STRIP_GROUP}/view_{view:04d}"


def strips_due(step: int, edit_rate: int, every: int) -> bool:
    """Whether the edit made at `step` is one of every `every`-th (0: never).

    Counted from the step rather than from a running count, so a resumed run logs at the same steps.
    """
    return every > 0 and (step // edit_rate) % every == 0


def log_edit_strips(views: Sequence[int], originals: Tensor, renders: Tensor, edited: Tensor, step: int) -> None:
    """Queue one strip per view ([B, 3, H, W] batches) for the logger; non-finite edits are not shown."""
    for view, original, render, image in zip(views, originals, renders, edited, strict=True):
        if torch.isfinite(image).all():
            writer.put_image(strip_name(view), edit_strip(original.cpu(), render.cpu(), image.cpu()), step)
