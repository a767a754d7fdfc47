"""A datamanager that holds every training image in one tensor, which the edit overwrites view by view.

nerfacto's default ParallelDataManager caches images in worker processes, where in-place edits would be
invisible, so this builds on the VanillaDataManager and samples rays straight from the tensor it owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple, Type, Union

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from torch import Tensor

from in2n.logging import notice_once

ImageRows = Union[Tensor, List[Tensor]]
"""All training images: one [N, H, W, C] tensor, or a list of [H, W, C] when resolutions vary."""


@dataclass
class In2nDataManagerConfig(VanillaDataManagerConfig):
    """The datamanager of in2n: all training images in memory, replaceable per view."""

    _target: Type = field(default_factory=lambda: In2nDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=NerfstudioDataParserConfig)
    """The dataparser of the nerfacto run that is edited (nerfstudio-data by default)."""
    train_num_rays_per_batch: int = 16384
    """Rays per training step (rounded down to whole patches when patch_size > 1)."""
    eval_num_rays_per_batch: int = 4096
    """Rays per evaluation batch."""
    patch_size: int = 32
    """Side of the square ray patches sampled for the LPIPS loss; 1 samples single rays."""


class In2nDataManager(VanillaDataManager):
    """Training images in one tensor indexed by view, the untouched originals beside them.

    Row i of `images` is view i of the training dataset (the dataloader's collated batch comes in random
    order; it is sorted once here).
    """

    config: In2nDataManagerConfig

    def setup_train(self) -> None:
        # Caching every image is what makes the in-place edit visible to the ray sampler.
        self.config.train_num_images_to_sample_from = -1
        self.config.train_num_times_to_repeat_images = -1
        super().setup_train()
        batch = self.train_image_dataloader.cached_collated_batch
        assert batch is not None
        self.image_batch: Dict[str, Any] = sort_batch_by_view(batch)
        self.original_images: ImageRows = clone_rows(self.image_batch["image"])
        if self.num_channels == 4:
            notice_once(
                "Training images have an alpha channel: views are edited as RGB over a white background and "
                "the edited views are stored opaque."
            )

    @property
    def images(self) -> ImageRows:
        return self.image_batch["image"]

    @property
    def num_views(self) -> int:
        return len(self.train_dataset)

    @property
    def num_channels(self) -> int:
        return int(self.images[0].shape[-1])

    def image_size(self, view: int) -> Tuple[int, int]:
        """(height, width) of a training view."""
        return tuple(self.images[view].shape[:2])  # type: ignore[return-value]

    def current_rgb(self, view: int) -> Tensor:
        """The view's current training image as RGB [H, W, 3] (edited or not)."""
        return as_rgb(self.images[view])

    def original_rgb(self, view: int) -> Tensor:
        """The view's image as captured, RGB [H, W, 3]."""
        return as_rgb(self.original_images[view])

    def replace_image(self, view: int, rgb: Tensor) -> None:
        """Put an edited RGB image [H, W, 3] in place of the view's training image."""
        height, width = self.image_size(view)
        if tuple(rgb.shape) != (height, width, 3):
            raise ValueError(f"view {view} is {height}x{width}x3; the replacement is {tuple(rgb.shape)}")
        row = self.images[view]
        row[..., :3] = rgb.to(row)
        if row.shape[-1] == 4:
            row[..., 3] = 1.0

    def restore_originals(self) -> None:
        """Undo every edit."""
        for view in range(self.num_views):
            self.images[view].copy_(self.original_images[view])

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        assert self.train_pixel_sampler is not None
        batch = self.train_pixel_sampler.sample(self.image_batch)
        ray_bundle = self.train_ray_generator(batch["indices"])
        return ray_bundle, batch


def sort_batch_by_view(batch: Dict[str, Any]) -> Dict[str, Any]:
    """Reorder a collated batch so that row i holds view i (`image_idx` == i)."""
    order = torch.argsort(batch["image_idx"].cpu())
    sorted_batch: Dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == len(order):
            sorted_batch[key] = value[order.to(value.device)].contiguous()
        elif isinstance(value, list) and len(value) == len(order):
            sorted_batch[key] = [value[i] for i in order.tolist()]
        else:
            sorted_batch[key] = value
    return sorted_batch


def clone_rows(rows: ImageRows) -> ImageRows:
    return rows.clone() if isinstance(rows, Tensor) else [row.clone() for row in rows]


def as_rgb(image: Tensor) -> Tensor:
    """RGB of an RGB or RGBA image [H, W, C], RGBA composited over white."""
    if image.shape[-1] == 4:
        alpha = image[..., 3:4]
        return image[..., :3] * alpha + (1.0 - alpha)
    return image
