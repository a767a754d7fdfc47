"""Instruct-NeRF2NeRF for nerfstudio: edit a reconstructed 3D scene from a text instruction.

Every `ns-*` command imports this package while it discovers methods, so importing it must stay light (no diffusers
or transformers here). Discovery lets torch load nerfstudio's checkpoints (`in2n.method_configs`) and changes nothing
else: in2n's commands and methods set the console up themselves (`in2n.process`).
"""

from in2n.errors import In2nError

__all__ = ["In2nError"]
