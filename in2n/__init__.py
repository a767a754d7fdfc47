"""Instruct-NeRF2NeRF for nerfstudio: edit a reconstructed 3D scene from a text instruction.

Every `ns-*` command imports this package while it discovers methods, so importing it must stay light (no diffusers
or transformers here) and must change nothing in the process: in2n's commands and methods set the process up
themselves (`in2n.process`).
"""

from in2n.errors import In2nError

__all__ = ["In2nError"]
