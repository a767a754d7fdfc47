"""A deterministic, non-generative editor that recolours towards the photographic negative: a measurable stand-in
for the diffusion model.

It edits every view towards the negative of its original (each colour c becomes 1 - c), moving the render by the
sampled noise level as the diffusion model would (more noise, more edit). The result depends on the render as well as
on the original, so a wrong camera or a lost write lowers how close the scene gets to the target. Used by the tests
and by the offline demo (`--pipeline.editor negative`); it ignores the prompt.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from in2n.editors.base import NUM_TRAIN_TIMESTEPS, Editor, EditSettings, check_batch, view_generator
from in2n.editors.base import noise_levels as draw_noise_levels


def negative_target(originals: Tensor) -> Tensor:
    """The image the negative editor converges to for the given originals ([..., 3, H, W]): their negative, a change
    far larger than a NeRF's error on a view it never saw, so that the edit's effect on such views is measurable."""
    return 1.0 - originals


class NegativeEditor(Editor):
    """Moves each render towards `negative_target(original)` by the sampled noise level."""

    name = "negative"

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
        levels = draw_noise_levels([view_generator(seed) for seed in seeds], settings, noise_levels)
        strengths = torch.tensor(
            [level / NUM_TRAIN_TIMESTEPS for level in levels], dtype=renders.dtype, device=renders.device
        ).view(-1, 1, 1, 1)
        target = negative_target(originals.to(renders))
        return torch.lerp(renders, target, strengths).clamp(0.0, 1.0)

    def describe(self) -> str:
        return "negative editor (deterministic recolouring to the negative; test and demo backend, ignores the prompt)"
