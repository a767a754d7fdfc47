"""SDXL InstructPix2Pix as an editor: two CLIP text encoders, a pooled text embedding, and the edit size as
conditioning (SDXL's "time ids"), computed as diffusers' StableDiffusionXLInstructPix2PixPipeline computes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple

import torch
from torch import Tensor

from in2n.editors.families import SDXL_INSTRUCT_PIX2PIX
from in2n.editors.instruction import InstructionEditor, UnetConditioning, guidance_rows


@dataclass(frozen=True)
class SdxlPromptEmbeddings:
    """The prompt and the empty prompt as SDXL's UNet takes them."""

    hidden: Tensor
    """[2, L, D1 + D2] penultimate hidden states of both text encoders, side by side: [text, unconditional]."""
    pooled: Tensor
    """[2, P] projected pooled output of the second text encoder: [text, unconditional]."""


class SdxlInstructPix2PixEditor(InstructionEditor[SdxlPromptEmbeddings]):
    """The edit of `InstructionEditor` with SDXL's conditioning. Its VAE runs in fp32 when the editor runs in fp16 and
    the VAE's config asks for it (`force_upcast`: SDXL's VAE overflows in fp16), as diffusers' pipelines do."""

    name = "sdxl-ip2p"
    family = SDXL_INSTRUCT_PIX2PIX

    def take_text_encoders(self, pipe: Any) -> None:
        self.text_encoder = pipe.text_encoder.to(self.device).eval()
        self.text_encoder_2 = pipe.text_encoder_2.to(self.device).eval()
        self.tokenizer, self.tokenizer_2 = pipe.tokenizer, pipe.tokenizer_2
        # SDXL checkpoints are trained with zeros, not the empty prompt's embeddings, as the unconditional input.
        self.zero_unconditional = bool(pipe.config.get("force_zeros_for_empty_prompt", True))

    def vae_needs_fp32(self, vae_config: Any) -> bool:
        return self.dtype == torch.float16 and bool(getattr(vae_config, "force_upcast", False))

    def encode_prompt(self, prompt: str) -> SdxlPromptEmbeddings:
        texts = [prompt] if self.zero_unconditional else [prompt, ""]
        first = self.text_encoder(self.tokens(self.tokenizer, texts), output_hidden_states=True)
        second = self.text_encoder_2(self.tokens(self.tokenizer_2, texts), output_hidden_states=True)
        hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
        pooled = second.text_embeds
        if self.zero_unconditional:
            hidden = torch.cat([hidden, torch.zeros_like(hidden)])
            pooled = torch.cat([pooled, torch.zeros_like(pooled)])
        return SdxlPromptEmbeddings(hidden=hidden.to(self.dtype), pooled=pooled.to(self.dtype))

    def unet_conditioning(
        self, embeddings: SdxlPromptEmbeddings, views: int, size: Tuple[int, int]
    ) -> UnetConditioning:
        # (original size, crop top-left, target size): the view is neither cropped nor rescaled.
        time_ids = torch.tensor([[*size, 0, 0, *size]], dtype=self.dtype, device=self.device)
        hidden, pooled = embeddings.hidden, embeddings.pooled
        return {
            "encoder_hidden_states": guidance_rows(hidden[0:1], hidden[1:2], views),
            "added_cond_kwargs": {
                "text_embeds": guidance_rows(pooled[0:1], pooled[1:2], views),
                "time_ids": time_ids.expand(3 * views, -1),
            },
        }
