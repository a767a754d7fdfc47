"""splatfacto's datamanager, whose cached training images the edit overwrites view by view.

splatfacto trains on whole images: nerfstudio's FullImageDatamanager loads every training image once into a list
(`cached_train`, one dict per view) and hands out a copy of a view's dict per step, the image tensor itself shared.
The edit writes into those image tensors in place, so the next step that draws a view trains on its edit. They are
cached as floats in [0, 1] (splatfacto's default caches uint8, into which an edit would be quantised) on the training
device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Type

from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from in2n.console import notice_once
from in2n.data.training_images import TrainingImages


@dataclass
class In2nSplatDataManagerConfig(FullImageDatamanagerConfig):
    """splatfacto's datamanager, with the training images held as floats the edit writes into."""

    _target: Type = field(default_factory=lambda: In2nSplatDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=NerfstudioDataParserConfig)
    """The dataparser of the splatfacto run that is edited (nerfstudio-data by default). The edit needs no 3D points:
    its Gaussians come from the checkpoint."""
    cache_images: Literal["cpu", "gpu"] = "gpu"
    """Where the training images are kept: "gpu" is the training device (the CPU on a CPU run)."""
    cache_images_type: Literal["uint8", "float32"] = "float32"
    """float32: edits are written into the images unquantised (uint8 is refused for an edit)."""


class In2nSplatDataManager(FullImageDatamanager):
    """FullImageDatamanager whose `training_images` row i is the image training view i draws."""

    config: In2nSplatDataManagerConfig

    @property
    def num_views(self) -> int:
        return len(self.train_dataset)

    @cached_property
    def training_images(self) -> TrainingImages:
        images = TrainingImages([entry["image"] for entry in self.cached_train])
        if images.num_channels == 4:
            notice_once(
                "Training images have an alpha channel: views are edited as RGB over a white background and the "
                "edited views are stored opaque."
            )
        return images

    def use_masks_for_edits(self) -> None:
        """Hand the dataset's masks to the edit (as the region it may change) and train on every pixel.

        splatfacto blanks out what lies outside a view's mask in its loss; masks that limit an edit must not limit what
        the scene learns, or everything outside them would be left untrained.
        """
        masks = [entry.pop("mask", None) for entry in self.cached_train]
        self.training_images.masks = None if any(mask is None for mask in masks) else masks
