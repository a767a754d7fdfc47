"""Where torchvision keeps the AlexNet weights that nerfacto's LPIPS network is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch.hub

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
"""File name under which torchvision caches `AlexNet_Weights.IMAGENET1K_V1`."""


def alexnet_weights_path(torch_home: Optional[Path] = None) -> Path:
    """The file torchvision loads (and downloads if absent): `$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`.

    Without `torch_home`, the folder torch uses now (TORCH_HOME, else ~/.cache/torch).
    """
    hub = Path(torch.hub.get_dir()) if torch_home is None else Path(torch_home) / "hub"
    return hub / "checkpoints" / ALEXNET_FILE
