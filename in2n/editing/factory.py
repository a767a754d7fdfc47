"""Build the editor a pipeline config asks for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from in2n.editing.base import Editor
from in2n.editing.devices import resolve_device

if TYPE_CHECKING:
    from in2n.pipeline import In2nPipelineConfig


def build_editor(config: In2nPipelineConfig, default_device: str) -> Editor:
    if config.editor == "reference":
        from in2n.editing.reference import ReferenceEditor

        return ReferenceEditor()
    from in2n.editing.ip2p import InstructPix2PixEditor

    return InstructPix2PixEditor(
        model=config.ip2p_model,
        device=resolve_device(config.ip2p_device or default_device),
        full_precision=config.ip2p_use_full_precision,
        max_edit_size=config.max_edit_size,
    )
