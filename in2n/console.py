"""Console messages of the plugin, through nerfstudio's console so they interleave with its output."""

from __future__ import annotations

import warnings
from typing import Set

from nerfstudio.utils.rich_utils import CONSOLE

_shown: Set[str] = set()

DEPENDENCIES = (
    "torch", "torchvision", "torchmetrics", "nerfstudio", "tyro", "timm", "diffusers", "transformers",
    "huggingface_hub", "accelerate", "gsplat", "nerfacc", "viser", "jaxtyping", "typeguard", "matplotlib", "PIL",
)  # fmt: skip
"""Packages whose deprecation and usage warnings are not the user's to act on."""


def quiet_dependency_warnings() -> None:
    """Keep the dependencies' deprecation and usage warnings (pages of them on the stack in2n runs on) off the
    console; the plugin's messages are notices, not warnings, and stay."""
    modules = rf"({'|'.join(DEPENDENCIES)})(\..*)?$"
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=modules)


def notice(message: str) -> None:
    CONSOLE.print(f"[bold yellow]in2n:[/bold yellow] {message}")


def notice_once(message: str) -> None:
    """Print a notice the first time it comes up in this process."""
    if message not in _shown:
        _shown.add(message)
        notice(message)
