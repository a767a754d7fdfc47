"""Which editor a run uses, and where it runs: the options, and building the editor from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

from in2n.editors.base import Editor
from in2n.editors.devices import resolve_device
from in2n.editors.families import SD_INSTRUCT_PIX2PIX, SDXL_INSTRUCT_PIX2PIX
from in2n.editors.loading import DEFAULT_IP2P_MODEL, editor_family
from in2n.errors import option

EditorFactory = Callable[[str], Editor]
"""Builds the editor of a training run, given the training device (e.g. "cuda:0"). The pipeline calls it once, when
it trains; tests and the benchmark pass their own to `In2nPipeline` or `In2nTrainer`."""


@dataclass
class EditorConfig:
    """The options of the editor (`--pipeline.*`)."""

    editor: Literal["ip2p", "negative"] = "ip2p"
    """ip2p: the instruction editor --pipeline.ip2p-model names. negative: a deterministic recolouring towards the
    photographic negative that ignores the prompt, for tests and the offline demo."""
    ip2p_model: str = DEFAULT_IP2P_MODEL
    """The instruction editor: a Hugging Face hub id or a local folder saved with save_pretrained, of InstructPix2Pix
    (timbrooks/instruct-pix2pix), an editor fine-tuned from it (vinesmsuic/magicbrush-jul7, UCSC-VLAA/HQ-Edit), or SDXL
    InstructPix2Pix (diffusers/sdxl-instructpix2pix-768). Which one it is is read from its UNet's config."""
    ip2p_device: Optional[str] = None
    """Device for the instruction editor (e.g. cuda:1); default: the training device."""
    ip2p_use_full_precision: bool = True
    """Run the instruction editor in fp32; False uses fp16 on CUDA (on the CPU, fp32 is used either way)."""
    max_edit_size: Optional[int] = None
    """Views larger than this on their long side are edited at this size and scaled back; default: the editor's
    native size, 512 for InstructPix2Pix and the editors fine-tuned from it, 768 for SDXL InstructPix2Pix."""
    compile_editor: Optional[bool] = None
    """Compile the editor's UNet with torch.compile (as CUDA graphs on CUDA), against the per-kernel launch overhead
    that bounds a denoising step on a fast GPU. The first edit pays a one-off compile (about 35-50 s on an H200),
    again for each new view size or number of views per edit; where compiling fails, edits run uncompiled after a
    notice. Default (None): on when the editor runs on CUDA, where it made the edit 2.8x faster (measured on an H200);
    off elsewhere (on a CPU the compile takes minutes)."""


def build_editor(config: EditorConfig, training_device: str) -> Editor:
    """The editor the options ask for, of the family the model is; it goes to --pipeline.ip2p-device, else the
    training device."""
    if config.editor == "negative":
        from in2n.editors.negative import NegativeEditor

        return NegativeEditor()
    from in2n.editors.ip2p import InstructPix2PixEditor
    from in2n.editors.sdxl import SdxlInstructPix2PixEditor

    with option("--pipeline.ip2p-device"):
        device = resolve_device(config.ip2p_device or training_device)
    editors = {SD_INSTRUCT_PIX2PIX: InstructPix2PixEditor, SDXL_INSTRUCT_PIX2PIX: SdxlInstructPix2PixEditor}
    compile_unet = config.compile_editor if config.compile_editor is not None else device.type == "cuda"
    with option("--pipeline.ip2p-model"):
        return editors[editor_family(config.ip2p_model)](
            model=config.ip2p_model,
            device=device,
            full_precision=config.ip2p_use_full_precision,
            max_edit_size=config.max_edit_size,
            compile_unet=compile_unet,
        )
