"""The edit as the original Instruct-NeRF2NeRF implementation made it, on the networks of the package's editor."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import torch
from torch import Tensor

from in2n.editors.base import Editor, EditSettings, check_batch, view_generator
from in2n.editors.instruction import InstructionEditor, resize
from in2n.editors.sizing import edit_size


class ReferenceModeEditor(Editor):
    """The edit as the original implementation made it, on the networks of one of the package's instruction editors.

    One view per UNet batch (three rows: text+image, image, neither), the original view's latents encoded anew on
    every edit, `diffusion_steps` DDIM steps whatever the noise level, and `torch.cuda.empty_cache()` after every
    edit. With the same settings it computes the same images as the editor's own `edit`.
    """

    name = "ip2p-reference"

    def __init__(self, editor: InstructionEditor) -> None:
        self.editor = editor
        self.device = editor.device

    def describe(self) -> str:
        return f"{self.editor.describe()}, edited the original implementation's way"

    @torch.no_grad()
    def encode_conditions(self, originals: Tensor) -> Tensor:
        """Latents of the original views, computed on every call (the mode of the posterior, unscaled)."""
        editor = self.editor
        return editor.vae.encode(editor.vae_input(originals)).latent_dist.mode().to(editor.dtype)

    @torch.no_grad()
    def edit(
        self,
        renders: Tensor,
        originals: Tensor,
        views: Sequence[int],
        prompt: str,
        settings: EditSettings,
        seeds: Sequence[int],
        noise_levels: Optional[Sequence[int]] = None,
    ) -> Tensor:
        check_batch(renders, originals, views, seeds)
        # The original always ran `diffusion_steps` steps, spread over [0, noise level].
        settings = replace(settings, scale_steps_with_noise=False)
        levels = [None] * len(seeds) if noise_levels is None else [[level] for level in noise_levels]
        return torch.cat(
            [
                self._edit_view(renders[i : i + 1], originals[i : i + 1], prompt, settings, seed, levels[i])
                for i, seed in enumerate(seeds)
            ]
        )

    def _edit_view(
        self,
        render: Tensor,
        original: Tensor,
        prompt: str,
        settings: EditSettings,
        seed: int,
        noise_level: Optional[Sequence[int]],
    ) -> Tensor:
        editor = self.editor
        height, width = render.shape[-2:]
        size = edit_size(height, width, editor.max_edit_size, editor.vae_scale_factor)
        # Draws from the view's generator in the package's order, so both editors see the same noise.
        generator = view_generator(seed)
        schedule = editor.schedules([generator], settings, noise_level)[0]
        latents = editor.encode_renders(resize(render, size), [generator])
        noise = torch.randn(latents.shape[1:], generator=generator)[None].to(latents)
        start = torch.tensor([schedule.timesteps[0]], device=editor.device)
        noisy = editor.sampler.add_noise(latents.float(), noise.float(), start)
        condition = self.encode_conditions(resize(original, size))
        latents = editor.denoise(noisy, condition, editor.prompt_embeddings(prompt), [schedule], settings)
        edited = editor.decode(latents)
        if editor.device.type == "cuda":
            torch.cuda.empty_cache()
        return resize(edited, (height, width)).to(render)
