"""The one error type users see, and the hook that shows it without a traceback."""

from __future__ import annotations

import sys
import textwrap
from types import TracebackType
from typing import Optional, Type


class In2nError(Exception):
    """A problem the user can fix. The message says what is wrong and what to do about it."""


def format_error(error: In2nError) -> str:
    """The message as printed on the console: one paragraph, wrapped, prefixed with the tool's name."""
    paragraphs = ("in2n: error: " + str(error)).split("\n")
    return "\n".join(textwrap.fill(p, width=100, break_on_hyphens=False, break_long_words=False) for p in paragraphs)


def install_excepthook() -> None:
    """Print an In2nError as its message alone; every other exception keeps its full traceback.

    `ns-train` and friends have no error handling of their own: whatever a method raises reaches the
    interpreter. Installed when the plugin is imported, which every `ns-*` command does.
    """
    previous = sys.excepthook
    if getattr(previous, "_in2n", False):
        return

    def hook(kind: Type[BaseException], value: BaseException, traceback: Optional[TracebackType]) -> None:
        if isinstance(value, In2nError):
            print(format_error(value), file=sys.stderr)
            return
        previous(kind, value, traceback)

    hook._in2n = True  # type: ignore[attr-defined]
    sys.excepthook = hook
