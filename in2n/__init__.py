"""Instruct-NeRF2NeRF for nerfstudio: edit a reconstructed 3D scene from a text instruction.

Every `ns-*` command imports this package while it discovers methods, so importing it must stay light
(no diffusers or transformers here) and it is the place to make the stack work together.
"""

from in2n.console import quiet_dependency_warnings
from in2n.errors import In2nError, install_excepthook
from in2n.runs.compat import allow_numpy_in_checkpoints

allow_numpy_in_checkpoints()
install_excepthook()
quiet_dependency_warnings()

__all__ = ["In2nError"]
