"""What in2n's own commands and methods set up in the process they run in, and nothing else does.

Every `ns-*` command imports every installed plugin while it lists methods, so importing in2n changes nothing: the
console (errors shown as their message, dependencies' warnings kept off it) and torch's loader for nerfstudio's
checkpoints are set up here, by `ns-train in2n`'s trainer, by an in2n pipeline (`ns-render` and `ns-viewer` on an
in2n run build one before they load its checkpoint) and by the in2n-* tools, before they do anything else.
"""

from __future__ import annotations

from in2n.console import quiet_dependency_warnings
from in2n.errors import install_excepthook
from in2n.runs.compat import allow_numpy_in_checkpoints


def prepare_process() -> None:
    """Set the process up for in2n (idempotent)."""
    install_excepthook()
    quiet_dependency_warnings()
    allow_numpy_in_checkpoints()
