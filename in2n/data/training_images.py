"""The training images the edit overwrites view by view, and the untouched originals beside them."""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

from torch import Tensor

ImageRows = Union[Tensor, List[Tensor]]
"""All training images: one [N, H, W, C] tensor, or a list of [H, W, C] when resolutions vary."""


class TrainingImages:
    """Row i is training view i, as floats in [0, 1] with 3 (RGB) or 4 (RGBA) channels.

    The rows are the tensor the ray sampler reads: `replace_image` writes into it in place, so the next sampled batch
    sees the edit. RGBA views are edited as RGB over a white background and stored opaque.

    Args:
        rows: the images.
        masks: the dataset's per-view masks [H, W, 1] (True: inside), when it declares them and the edit uses them.
    """

    def __init__(self, rows: ImageRows, masks: Optional[ImageRows] = None) -> None:
        self.rows = rows
        self.originals: ImageRows = clone_rows(rows)
        self.masks = masks

    @property
    def num_views(self) -> int:
        return len(self.rows)

    @property
    def num_channels(self) -> int:
        return int(self.rows[0].shape[-1])

    def image_size(self, view: int) -> Tuple[int, int]:
        """(height, width) of a training view."""
        return tuple(self.rows[view].shape[:2])  # type: ignore[return-value]

    def current_rgb(self, view: int) -> Tensor:
        """The view's current training image as RGB [H, W, 3] (edited or not)."""
        return as_rgb(self.rows[view])

    def original_rgb(self, view: int) -> Tensor:
        """The view's image as captured, RGB [H, W, 3]."""
        return as_rgb(self.originals[view])

    def replace_image(self, view: int, rgb: Tensor) -> None:
        """Put an edited RGB image [H, W, 3] in place of the view's training image."""
        height, width = self.image_size(view)
        if tuple(rgb.shape) != (height, width, 3):
            raise ValueError(f"view {view} is {height}x{width}x3; the replacement is {tuple(rgb.shape)}")
        row = self.rows[view]
        row[..., :3] = rgb.to(row)
        if row.shape[-1] == 4:
            row[..., 3] = 1.0

    def restore_originals(self) -> None:
        """Undo every edit."""
        for view in range(self.num_views):
            self.rows[view].copy_(self.originals[view])


def clone_rows(rows: ImageRows) -> ImageRows:
    return rows.clone() if isinstance(rows, Tensor) else [row.clone() for row in rows]


def as_rgb(image: Tensor) -> Tensor:
    """RGB of an RGB or RGBA image [H, W, C], RGBA composited over white."""
    if image.shape[-1] == 4:
        alpha = image[..., 3:4]
        return image[..., :3] * alpha + (1.0 - alpha)
    return image
