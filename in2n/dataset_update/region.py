"""Limiting an edit to part of the scene.

The written-back image is the edit inside the region and the original view outside it, blended over a few pixels
around the region so that no seam is trained into the scene (the region itself is edited fully, however small it is
in the view). The region of a view is either
- an axis-aligned box in the frame the run trained in (the frame the viewer shows and camera paths use): a pixel is
  inside when its surface point, from the render's expected depth, lies in the box; or
- the per-view masks the dataset declares (`mask_path` in transforms.json): white is inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from in2n.data.training_images import TrainingImages
from in2n.errors import In2nError

FEATHER_PX = 3
"""The edit fades out over this many pixels around the region."""

EditBox = Tuple[float, float, float, float, float, float]
"""X0 Y0 Z0 X1 Y1 Z1: the low and the high corner."""
EditMasks = Literal["none", "dataset"]


class EditRegion(ABC):
    """Where in a view the edit applies."""

    needs_points: bool = False
    """Whether `mask` needs the view's surface points (a render with depth)."""

    @abstractmethod
    def mask(self, view: int, points: Optional[Tensor]) -> Tensor:
        """The view's region as weights [H, W] in [0, 1] (1: edited), feathered at the edge."""

    @abstractmethod
    def describe(self) -> str:
        """For the console."""


class BoxRegion(EditRegion):
    """The pixels whose surface lies in an axis-aligned box."""

    needs_points = True

    def __init__(self, box: Sequence[float]) -> None:
        self.low = torch.tensor(box[:3], dtype=torch.float32)
        self.high = torch.tensor(box[3:], dtype=torch.float32)

    def mask(self, view: int, points: Optional[Tensor]) -> Tensor:
        assert points is not None, "a box region needs the surface points of the render"
        points = points.float().cpu()
        inside = ((points >= self.low) & (points <= self.high)).all(dim=-1)
        return feather(inside.float())

    def describe(self) -> str:
        low, high = (", ".join(f"{v:g}" for v in corner.tolist()) for corner in (self.low, self.high))
        return f"edits limited to the box ({low}) - ({high})"


class DatasetMaskRegion(EditRegion):
    """The dataset's per-view masks."""

    def __init__(self, masks: Sequence[Tensor]) -> None:
        self.masks = masks

    def mask(self, view: int, points: Optional[Tensor]) -> Tensor:
        return feather(self.masks[view][..., 0].float().cpu())

    def describe(self) -> str:
        return "edits limited to the dataset's masks"


def feather(mask: Tensor, radius: int = FEATHER_PX) -> Tensor:
    """A 0/1 mask [H, W] as weights: 1 inside, falling off linearly over `radius` pixels outside it (by the
    chessboard distance to the region), 0 beyond."""
    weights = mask.clone()
    for distance in range(1, radius + 1):
        grown = F.max_pool2d(mask[None, None], 2 * distance + 1, stride=1, padding=distance)[0, 0]
        weights = torch.maximum(weights, grown * (1.0 - distance / (radius + 1)))
    return weights


def blend(edited: Tensor, original: Tensor, mask: Optional[Tensor]) -> Tensor:
    """The edit inside the region and the original outside ([3, H, W] images, mask [H, W])."""
    if mask is None:
        return edited
    weights = mask.to(edited)[None]
    return weights * edited + (1.0 - weights) * original.to(edited)


def edit_region(box: Optional[EditBox], masks: EditMasks, images: TrainingImages) -> Optional[EditRegion]:
    """The region the options ask for (None: the whole view)."""
    if box is not None:
        return BoxRegion(box)
    if masks == "dataset":
        if images.masks is None:
            raise In2nError(
                "--pipeline.edit-masks dataset: the dataset declares no masks (no `mask_path` in its transforms.json "
                "frames). Add a mask image per frame (white where the edit applies) and its mask_path, or limit the "
                "edit with --pipeline.edit-box X0 Y0 Z0 X1 Y1 Z1 instead."
            )
        return DatasetMaskRegion(images.masks)
    return None
