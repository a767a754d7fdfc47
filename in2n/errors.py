"""The one error type users see, and the hook that shows it without a traceback."""

from __future__ import annotations

import sys
import textwrap
from contextlib import contextmanager
from types import TracebackType
from typing import Iterator, Optional, Type


class In2nError(Exception):
    """A problem the user can fix. The message says what is wrong and what to do about it."""


class ValueProblem(In2nError):
    """A value that cannot be used, described without naming where it came from: the code that reads the options
    attaches the option's name (`for_option`, `option`). Shown as it is, it reads "<value>: <problem>"."""

    def __init__(self, value: str, problem: str) -> None:
        super().__init__(f"{value}: {problem}")
        self.value = value
        self.problem = problem

    def for_option(self, name: str) -> In2nError:
        """The problem as the option `name` (e.g. --pipeline.ip2p-model) gave the value."""
        return In2nError(f"{name} {self.value}: {self.problem}")


@contextmanager
def option(name: str) -> Iterator[None]:
    """Attach the option `name` to a ValueProblem raised inside: the value came from it."""
    try:
        yield
    except ValueProblem as problem:
        raise problem.for_option(name) from None


def format_error(error: In2nError) -> str:
    """The message as printed on the console: one paragraph, wrapped, prefixed with the tool's name."""
    paragraphs = ("in2n: error: " + str(error)).split("\n")
    return "\n".join(textwrap.fill(p, width=100, break_on_hyphens=False, break_long_words=False) for p in paragraphs)


def install_excepthook() -> None:
    """Print an In2nError as its message alone; every other exception keeps its full traceback.

    `ns-train` and friends have no error handling of their own: whatever a method raises reaches the
    interpreter. Installed by in2n's methods and commands (`in2n.process`).
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
