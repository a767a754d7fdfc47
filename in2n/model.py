"""nerfacto with the losses of Instruct-NeRF2NeRF: L1 on colour and LPIPS on ray patches."""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass, field
from typing import Dict, Type

import torch
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch.nn import L1Loss

from in2n.errors import In2nError
from in2n.lpips_weights import ALEXNET_FILE, alexnet_weights_path


@dataclass
class In2nModelConfig(NerfactoModelConfig):
    """nerfacto, trained on edited views with an L1 and a perceptual loss."""

    _target: Type = field(default_factory=lambda: In2nModel)
    eval_num_rays_per_chunk: int = 1 << 15
    """Rays rendered per chunk when a whole image is rendered."""
    average_init_density: float = 0.01
    """As nerfacto's method config: only matters for a scene trained from scratch."""
    use_lpips: bool = True
    """Add an LPIPS loss on the square ray patches the datamanager samples."""
    lpips_loss_mult: float = 1.0
    """Weight of the LPIPS loss."""
    use_l1: bool = True
    """Use L1 instead of MSE for the colour loss (edited views disagree; L1 is robust to that)."""
    patch_size: int = 32
    """Side of the ray patches; must equal the datamanager's patch_size (the method configs keep them equal)."""


class In2nModel(NerfactoModel):
    config: In2nModelConfig

    def populate_modules(self) -> None:
        try:
            super().populate_modules()
        except (urllib.error.URLError, OSError) as error:
            raise In2nError(missing_lpips_backbone_message(error)) from None
        if self.config.use_l1:
            self.rgb_loss = L1Loss()

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if self.training and self.config.use_lpips:
            size = self.config.patch_size
            predicted = outputs["rgb"].view(-1, size, size, 3).permute(0, 3, 1, 2).clamp(0.0, 1.0)
            target = batch["image"][..., :3].to(self.device).view(-1, size, size, 3).permute(0, 3, 1, 2)
            # The network itself, not the torchmetrics Metric around it: the Metric keeps running sums of
            # every call, which would hold on to each step's autograd graph.
            loss_dict["lpips_loss"] = (
                self.config.lpips_loss_mult * self.lpips.net(predicted, target.clamp(0.0, 1.0), normalize=True).mean()
            )
        return loss_dict


def missing_lpips_backbone_message(error: BaseException) -> str:
    target = alexnet_weights_path()
    return (
        f"nerfacto's LPIPS network needs torchvision's AlexNet weights ({ALEXNET_FILE}), which are not on this "
        f"machine and could not be downloaded ({error}). Copy the file from a machine with internet (it lands in "
        f'~/.cache/torch/hub/checkpoints/ after `python -c "import torchvision; '
        f"torchvision.models.alexnet(weights='DEFAULT')\"`) to {target}, or set TORCH_HOME to a folder whose "
        "hub/checkpoints/ holds it."
    )
