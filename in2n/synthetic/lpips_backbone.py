"""A random AlexNet checkpoint so torchmetrics' LPIPS can be built offline.

Nerfacto builds ``LearnedPerceptualImagePatchSimilarity`` when the model is constructed, which loads torchvision's
ImageNet AlexNet from ``$TORCH_HOME/hub/checkpoints`` and downloads it if the file is absent. torchvision only checks
the hash of files it downloads, so any state dict of the right shapes in that place lets training start without a
network; LPIPS values computed with it are meaningless, which is fine for tests and benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision

from in2n.model import alexnet_weights_path


def write_random_alexnet(torch_home: Path, seed: int = 0) -> Path:
    """Writes a randomly initialised AlexNet state dict (zero classifier) where torchvision looks for the ImageNet
    weights.

    An existing file (random or real) is left untouched.

    Args:
        torch_home: The directory ``$TORCH_HOME`` points to when LPIPS is built.
        seed: Seed of the random weights. The global RNG state is restored.

    Returns:
        Path of the checkpoint, ``torch_home/hub/checkpoints/alexnet-owt-7be5be79.pth``.
    """
    path = alexnet_weights_path(torch_home)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state_dict = torchvision.models.alexnet().state_dict()
    # LPIPS only uses the convolutional features; zero-stride views make the unused 58M-parameter classifier take
    # no space in the file (10 MB instead of 244 MB) while still loading into torchvision's AlexNet.
    state_dict = {
        name: tensor if name.startswith("features.") else torch.zeros(1).expand(tensor.shape)
        for name, tensor in state_dict.items()
    }
    # Write then rename, so a concurrent LPIPS construction never reads a half-written file.
    partial_path = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(state_dict, partial_path)
    partial_path.replace(path)
    return path
