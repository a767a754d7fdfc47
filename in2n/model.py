"""nerfacto with the losses of Instruct-NeRF2NeRF: L1 on colour and LPIPS on ray patches."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, Optional, Type

import torch
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import nn
from torch.nn import L1Loss

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""File name under which torchvision caches `AlexNet_Weights.IMAGENET1K_V1`, which nerfacto's LPIPS is built from."""
RENDER_CHUNK_RAYS = 1 << 12
"""Rays per chunk when a whole image is rendered: with the pure-torch hash grid, nerfacto's 32768 took ~10 GB for a
512x384 view (see method_configs)."""


@dataclass
class In2nModelConfig(NerfactoModelConfig):
    """nerfacto, trained on edited views with an L1 and a perceptual loss."""

    _target: Type = field(default_factory=lambda: In2nModel)
    eval_num_rays_per_chunk: int = RENDER_CHUNK_RAYS
    """Rays rendered per chunk when a whole image is rendered (the view to edit, eval images, ns-render)."""
    average_init_density: float = 0.01
    """As nerfacto's method config. The field scales every density by it, so an edit takes the value of the run it
    edits (depth-nerfacto trains with 1.0)."""
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
        with lpips_weights_from_checkpoint():
            super().populate_modules()
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


@contextmanager
def lpips_weights_from_checkpoint() -> Iterator[None]:
    """Build nerfacto's LPIPS network without torchvision's pretrained AlexNet.

    nerfacto builds LPIPS from the AlexNet weights in torchvision's cache and downloads them when they are missing.
    Every checkpoint in2n loads (the nerfacto run it edits, or its own) holds those weights in its state dict
    (`_model.lpips.net...`), and loading it overwrites the backbone anyway, so the backbone's layers are only
    created: editing, `ns-render` and `ns-viewer` then need neither the file nor a network.
    """
    from torchmetrics.functional.image import lpips

    torchvision_features = lpips._get_tv_model_features
    lpips._get_tv_model_features = untrained_features
    try:
        yield
    finally:
        lpips._get_tv_model_features = torchvision_features


def alexnet_weights_path(torch_home: Optional[Path] = None) -> Path:
    """The file torchvision loads (and downloads if absent): `$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`.

    Without `torch_home`, the folder torch uses (TORCH_HOME, else ~/.cache/torch).
    """
    hub = Path(torch.hub.get_dir()) if torch_home is None else Path(torch_home) / "hub"
    return hub / "checkpoints" / ALEXNET_FILE


def untrained_features(net: str, pretrained: bool = False) -> nn.Sequential:
    """The feature layers of a torchvision network, freshly initialised, built without its classifier: AlexNet's
    classifier is 96% of its parameters, and initialising them took longer than reading the pretrained file."""
    import torchvision

    with torch.device("meta"):  # layers without memory: nothing is initialised yet
        features = getattr(torchvision.models, net)(weights=None).features
    features = features.to_empty(device="cpu")
    for layer in features.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return features
