"""What in2n's own commands and methods set up in the process they run in, and nothing else does.

Every `ns-*` command imports every installed plugin while it lists methods, so importing in2n leaves the console
alone: errors shown as their message and dependencies' warnings kept off it are set up here, by `ns-train in2n`'s
trainer, by an in2n pipeline (`ns-render` and `ns-viewer` on an in2n run build one before they load its checkpoint)
and by the in2n-* tools, before they do anything else. Torch's loader for nerfstudio's checkpoints is also set up at
discovery (`in2n.method_configs`), since nerfstudio's own commands need it for the nerfacto run an edit starts from.
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
