"""Load an instruction editor from the Hugging Face hub or a local folder, with a clear message when it can't be had."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

import torch

from in2n.editors.families import SD_INSTRUCT_PIX2PIX, SDXL_INSTRUCT_PIX2PIX, EditorFamily, detect_family
from in2n.errors import ValueProblem
from in2n.hub import ModelKind, load_pretrained

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

DEFAULT_IP2P_MODEL = "timbrooks/instruct-pix2pix"
IP2P_KIND = ModelKind(
    title="InstructPix2Pix",
    marker="model_index.json",
    saved_with="`save_pretrained(...)` of a diffusers InstructPix2Pix pipeline (SD or SDXL)",
    example=DEFAULT_IP2P_MODEL,
)

_LOAD_OPTIONS: Dict[EditorFamily, Dict[str, Any]] = {
    # Edits of training views are never shown as generated images; the checker would only cost memory.
    SD_INSTRUCT_PIX2PIX: {"safety_checker": None, "requires_safety_checker": False},
    # The invisible watermark is applied to output images only, which the editor never makes (and it needs a package).
    SDXL_INSTRUCT_PIX2PIX: {"add_watermarker": False},
}


def editor_family(model: str) -> EditorFamily:
    """The family of the instruction editor a hub id or folder holds (see `in2n.editors.families`)."""
    return detect_family(model, IP2P_KIND)


def load_ip2p_pipeline(model: str, dtype: torch.dtype, family: Optional[EditorFamily] = None) -> DiffusionPipeline:
    """The diffusers pipeline of an instruction editor, loaded with its family's class whatever model_index.json names.

    Args:
        model: hub id or local folder.
        dtype: dtype of the networks.
        family: the family the caller expects; a ValueProblem if the model is of another. None: any.
    """
    import diffusers

    detected = editor_family(model)
    if family is not None and detected != family:
        raise ValueProblem(
            model,
            f"an {detected.title}, not an {family.title}. Build the editor with in2n.editors.factory.build_editor, "
            "which picks the editor for the model.",
        )
    pipeline_class = getattr(diffusers, detected.pipeline_class)
    options = _LOAD_OPTIONS[detected]
    return load_pretrained(
        lambda source: pipeline_class.from_pretrained(source, dtype=dtype, **options), model, IP2P_KIND
    )
