"""Small helpers shared by the tests."""

from __future__ import annotations


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone: words separated by single spaces."""
    return " ".join(text.split())
