"""Which kind of instruction editor a saved diffusers pipeline is, read from the configs of its components.

The class name in model_index.json is not trusted: fine-tuned InstructPix2Pix checkpoints such as MagicBrush are saved
under `StableDiffusionPipeline`, which would load them as text-to-image models. What makes an instruction editor is its
UNet: 8 input channels, the noisy latents and the latents of the image to edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from in2n.errors import ValueProblem
from in2n.hub import ModelKind, model_file, model_source

INSTRUCTION_EDITOR_CHANNELS = 8
"""UNet input channels of an InstructPix2Pix-style editor: 4 of noisy latents and 4 of the image to edit."""


@dataclass(frozen=True)
class EditorFamily:
    """A family of instruction editors that load with one diffusers pipeline class and are conditioned alike."""

    title: str
    """What the console and the messages call it."""
    pipeline_class: str
    """The diffusers pipeline class its checkpoints load with."""
    native_size: int
    """The image side, in pixels, the family was trained at; views are edited at most this large by default."""


SD_INSTRUCT_PIX2PIX = EditorFamily(
    title="InstructPix2Pix", pipeline_class="StableDiffusionInstructPix2PixPipeline", native_size=512
)
"""Stable Diffusion 1.5 based: one CLIP text encoder (InstructPix2Pix, MagicBrush, HQ-Edit)."""

SDXL_INSTRUCT_PIX2PIX = EditorFamily(
    title="SDXL InstructPix2Pix", pipeline_class="StableDiffusionXLInstructPix2PixPipeline", native_size=768
)
"""Stable Diffusion XL based: two text encoders, a pooled text embedding and the image size as conditioning."""

KNOWN_EDITORS: Tuple[Tuple[str, str], ...] = (
    ("InstructPix2Pix", "timbrooks/instruct-pix2pix"),
    ("MagicBrush", "vinesmsuic/magicbrush-jul7"),
    ("HQ-Edit", "UCSC-VLAA/HQ-Edit"),
    ("SDXL InstructPix2Pix", "diffusers/sdxl-instructpix2pix-768"),
)
"""(name, hub id) of the instruction editors known to work, for the messages."""


def known_editors_text() -> str:
    """The known editors in a sentence: "InstructPix2Pix (timbrooks/instruct-pix2pix), ... or ..."."""
    names = [f"{name} ({hub_id})" for name, hub_id in KNOWN_EDITORS]
    return ", ".join(names[:-1]) + " or " + names[-1]


def family_of(unet_config: Dict[str, Any], model_index: Dict[str, Any]) -> Tuple[Optional[EditorFamily], str]:
    """(the family, "") of a pipeline from its UNet's config and its model_index.json, or (None, what it is instead)."""
    channels = unet_config.get("in_channels")
    size_conditioned = unet_config.get("addition_embed_type") == "text_time"  # SDXL's pooled text + image size
    second_encoder = _names_a_component(model_index.get("text_encoder_2"))
    if channels == INSTRUCTION_EDITOR_CHANNELS:
        if not size_conditioned and unet_config.get("addition_embed_type") is None:
            return SD_INSTRUCT_PIX2PIX, ""
        if size_conditioned and second_encoder:
            return SDXL_INSTRUCT_PIX2PIX, ""
        if size_conditioned:
            return None, "an SDXL-style editor without a second text encoder (text_encoder_2), which SDXL needs"
        return None, f"an editor whose UNet takes {unet_config.get('addition_embed_type')!r} extra conditioning"
    xl = " XL" if size_conditioned else ""
    if channels == 4:
        return None, f"a text-to-image Stable Diffusion{xl} (its UNet takes 4 input channels: no image to edit)"
    if channels == 9:
        return None, f"an inpainting Stable Diffusion{xl} (its UNet takes 9 input channels: image, mask, masked image)"
    return None, f"a model whose UNet takes {channels} input channels, not {INSTRUCTION_EDITOR_CHANNELS}"


def _names_a_component(entry: Any) -> bool:
    """Whether a model_index.json entry names a component; absent ones are missing or [null, null]."""
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[0] is not None and entry[1] is not None


def detect_family(model: str, kind: ModelKind) -> EditorFamily:
    """The family of the editor a hub id or folder holds, from unet/config.json and model_index.json alone (a hub id's
    weights are not fetched until the editor loads); a ValueProblem naming what it is when it is not an editor."""
    source = model_source(model, kind)
    configs = {}
    for filename in ("model_index.json", "unet/config.json"):
        path = model_file(source, filename, model, kind)
        if path is None:
            raise ValueProblem(
                model,
                f"no {filename}, so it is not a diffusers pipeline with a UNet. Use an instruction editor: "
                f"{known_editors_text()}, by hub id or as a folder saved from one.",
            )
        configs[filename] = _read_json(path, model, kind)
    family, instead = family_of(configs["unet/config.json"], configs["model_index.json"])
    if family is None:
        raise ValueProblem(
            model,
            f"{instead}, not an instruction editor: in2n conditions every edit on the view it edits. Use an "
            f"instruction editor: {known_editors_text()}, by hub id or as a folder saved from one.",
        )
    return family


def _read_json(path: Path, model: str, kind: ModelKind) -> Dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueProblem(
            model,
            f"{path} could not be read as JSON ({error}). Save the model again, or delete it from the Hugging Face "
            "cache so that it is downloaded anew.",
        ) from None
    if not isinstance(content, dict):
        raise ValueProblem(model, f"{path} is not a JSON object. Save the model again.")
    return content
