"""A deterministic, non-generative editor: a measurable stand-in for the diffusion model.

It edits every view towards the photographic negative of its original (each colour c becomes 1 - c), moving the
render by the sampled noise level as the diffusion model would (more noise, more edit). The result depends on the
render as well as on the original, so a wrong camera or a lost write lowers how close the scene gets to the target.
Used by the tests and by the offline demo; it ignores the prompt.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from in2n.editing.base import NUM_TRAIN_TIMESTEPS, Editor, EditSettings, check_batch, sample_noise_level, view_generator


def reference_target(originals: Tensor) -> Tensor:
    """The image the reference editor converges to for the given originals ([..., 3, H, W]): their negative, a change
    far larger than a NeRF's error on a view it never saw, so that the edit's effect on such views is measurable."""
    return 1.0 - originals


class ReferenceEditor(Editor):
    """Moves each render towards `reference_target(original)` by the sampled noise level."""

    name = "reference"

    def edit(
        self,
        renders: Tensor,
        originals: Tensor,
        views: Sequence[int],
        prompt: str,
        settings: EditSettings,
        seeds: Sequence[int],
    ) -> Tensor:
        check_batch(renders, originals, views, seeds)
        strengths = torch.tensor(
            [sample_noise_level(view_generator(seed), settings) / NUM_TRAIN_TIMESTEPS for seed in seeds],
            dtype=renders.dtype,
            device=renders.device,
        ).view(-1, 1, 1, 1)
        target = reference_target(originals.to(renders))
        return torch.lerp(renders, target, strengths).clamp(0.0, 1.0)

    def describe(self) -> str:
        return "reference editor (deterministic recolouring to the negative; test and demo backend, ignores the prompt)"
