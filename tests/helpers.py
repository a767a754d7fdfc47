"""Small helpers shared by the tests."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Tuple

import numpy as np
import torch
from PIL import Image

from in2n.editors.negative import negative_target
from in2n.synthetic.camera_path import SHIPPED_CAMERA_PATH

ORBIT_STRIDE = 8
"""short_orbit keeps every 15th camera of the shipped orbit: 6 frames, enough to check their order and middle."""


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone: words separated by single spaces."""
    return " ".join(text.split())


def folder_state(folder: Path) -> Dict[str, Tuple[int, int]]:
    """Every file below `folder`: (size, modification time in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def random_images(batch: int, seed: int, height: int = 32, width: int = 48) -> torch.Tensor:
    """Uniform random images [batch, 3, height, width] in [0, 1], the same for a seed."""
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as RGB floats [H, W, 3] in [0, 1]."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255.0


def distances(render: torch.Tensor, original: torch.Tensor) -> tuple:
    """Mean squared distance of a render [H, W, 3] to the original view and to the negative editor's target."""
    target = negative_target(original.permute(2, 0, 1)).permute(1, 2, 0)
    return ((render - original) ** 2).mean().item(), ((render - target) ** 2).mean().item()


def import_script(path: Path) -> ModuleType:
    """A file of scripts/ imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"in2n_script_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def short_orbit(path: Path) -> Path:
    """The shipped orbit thinned to every ORBIT_STRIDE-th camera, at the same frame rate, written to path."""
    content = json.loads(SHIPPED_CAMERA_PATH.read_text())
    content["camera_path"] = content["camera_path"][::ORBIT_STRIDE]
    content["seconds"] /= ORBIT_STRIDE
    path.write_text(json.dumps(content))
    return path
