"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone: words separated by single spaces."""
    return " ".join(text.split())


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as RGB floats [H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float() / 255.0
