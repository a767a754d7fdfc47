"""Console messages of the plugin, through nerfstudio's console so they interleave with its output."""

from __future__ import annotations

from typing import Set

from nerfstudio.utils.rich_utils import CONSOLE

_shown: Set[str] = set()


def notice(message: str) -> None:
    CONSOLE.print(f"[bold yellow]in2n:[/bold yellow] {message}")


def notice_once(message: str) -> None:
    """Print a notice the first time it comes up in this process."""
    if message not in _shown:
        _shown.add(message)
        notice(message)
