"""InstructPix2Pix as an editor, and the Stable Diffusion 1.5 editors fine-tuned from it (MagicBrush, HQ-Edit): one
CLIP text encoder, whose last hidden states condition the UNet."""

from __future__ import annotations

from typing import Any, Tuple

from torch import Tensor

from in2n.editors.families import SD_INSTRUCT_PIX2PIX
from in2n.editors.instruction import InstructionEditor, UnetConditioning, guidance_rows, resize

__all__ = ["InstructPix2PixEditor", "resize"]  # resize: for code that runs the editor's steps itself


class InstructPix2PixEditor(InstructionEditor[Tensor]):
    """The edit of `InstructionEditor` with the text conditioning of Stable Diffusion 1.5; prompt embeddings are
    [text, unconditional] hidden states [2, L, D]."""

    name = "ip2p"
    family = SD_INSTRUCT_PIX2PIX

    def take_text_encoders(self, pipe: Any) -> None:
        self.text_encoder = pipe.text_encoder.to(self.device).eval()
        self.tokenizer = pipe.tokenizer

    def encode_prompt(self, prompt: str) -> Tensor:
        return self.text_encoder(self.tokens(self.tokenizer, [prompt, ""]))[0].to(self.dtype)

    def unet_conditioning(self, embeddings: Tensor, views: int, size: Tuple[int, int]) -> UnetConditioning:
        return {"encoder_hidden_states": guidance_rows(embeddings[0:1], embeddings[1:2], views)}
