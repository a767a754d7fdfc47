"""A datamanager that holds every training image in one tensor, which the edit overwrites view by view.

nerfacto's default ParallelDataManager caches images in worker processes, where in-place edits would be
invisible, so this builds on the VanillaDataManager and samples rays straight from the tensor it owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from torch import Tensor

from in2n.console import notice_once
from in2n.data.training_images import TrainingImages


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


class NoEpochs:
    """The sampler nerfstudio's pipeline advances every step when it trains on several devices: this datamanager holds
    every image in memory and samples rays from them directly, so there is no epoch to advance."""

    def set_epoch(self, epoch: int) -> None:
        pass


class In2nDataManager(VanillaDataManager):
    """nerfstudio's datamanager, sampling rays from `training_images`, whose row i is training view i.

    The dataloader's collated batch comes in random order; it is sorted by view once here.
    """

    config: In2nDataManagerConfig
    train_sampler = eval_sampler = NoEpochs()

    def setup_train(self) -> None:
        # Caching every image is what makes the in-place edit visible to the ray sampler.
        self.config.train_num_images_to_sample_from = -1
        self.config.train_num_times_to_repeat_images = -1
        super().setup_train()
        batch = self.train_image_dataloader.cached_collated_batch
        assert batch is not None
        self.image_batch: Dict[str, Any] = sort_batch_by_view(batch)
        self.training_images = TrainingImages(self.image_batch["image"])
        if self.training_images.num_channels == 4:
            notice_once(
                "Training images have an alpha channel: views are edited as RGB over a white background and "
                "the edited views are stored opaque."
            )

    @property
    def num_views(self) -> int:
        return len(self.train_dataset)

    def use_masks_for_edits(self) -> None:
        """Hand the dataset's masks to the edit (as the region it may change) and sample rays from every pixel.

        nerfstudio samples training rays only inside masks; masks that limit an edit must not limit what the scene
        learns, or everything outside them would be left untrained.
        """
        self.training_images.masks = self.image_batch.pop("mask", None)

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
