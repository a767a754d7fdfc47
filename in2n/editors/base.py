"""The interface every editor implements, and the per-view randomness they share."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000
"""Length of the diffusion process the noise-level bounds are fractions of (Stable Diffusion's)."""


@dataclass(frozen=True)
class EditSettings:
    """How strongly and how carefully to edit; read anew for every edit so viewer changes apply at once."""

    guidance_scale: float = 7.5
    """Text guidance: how far to move from the image-only prediction towards the instruction."""
    image_guidance_scale: float = 1.5
    """Image guidance: how closely to stay to the original view."""
    diffusion_steps: int = 20
    """DDIM steps from the sampled noise level down to a clean image."""
    lower_bound: float = 0.02
    """Lowest noise level, as a fraction of the diffusion process."""
    upper_bound: float = 0.98
    """Highest noise level, as a fraction of the diffusion process."""
    scale_steps_with_noise: bool = False
    """Run only as many steps as the noise level calls for (diffusers' img2img `strength`): fewer steps at low noise."""


def view_generator(seed: int) -> torch.Generator:
    """A CPU generator for one view's edit.

    Every random draw of an edit comes from its own generator, created on the CPU and moved afterwards, so an
    edit is the same whether views are edited one at a time or batched, and on whichever device.
    """
    return torch.Generator(device="cpu").manual_seed(seed)


def noise_level_range(settings: EditSettings) -> Tuple[int, int]:
    """The lowest and highest timestep an edit starts from: [lower_bound, upper_bound] x 1000."""
    return int(NUM_TRAIN_TIMESTEPS * settings.lower_bound), int(NUM_TRAIN_TIMESTEPS * settings.upper_bound)


def sample_noise_level(generator: torch.Generator, settings: EditSettings) -> int:
    """The timestep t to noise the render to, uniform in [lower_bound, upper_bound] x 1000."""
    low, high = noise_level_range(settings)
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def stratified_noise_level(settings: EditSettings, stratum: int, strata: int, seed: int) -> int:
    """A noise level in stratum `stratum` of `strata` equal parts of the range, at a place in it `seed` draws.

    The edit loop gives the views of a pass one stratum each, in the pass's shuffled order: each edit's noise level is
    still uniform over the range, but every pass edits at the same spread of levels, so the agreement of one pass
    with the scene compares with the next's (with independent draws, the levels alone move a pass's mean by dB).
    """
    low, high = noise_level_range(settings)
    jitter = random.Random(seed).random()
    return min(high, low + int((stratum + jitter) / strata * (high - low + 1)))


def noise_levels(
    generators: Sequence[torch.Generator], settings: EditSettings, given: Optional[Sequence[int]] = None
) -> List[int]:
    """Each view's noise level: the given ones, else drawn from the view's generator. The draw is made either way,
    so that the generator's later draws (the latents' noise) do not depend on whether levels are given."""
    drawn = [sample_noise_level(g, settings) for g in generators]
    if given is None:
        return drawn
    if len(given) != len(generators):
        raise ValueError("one noise level is needed per view")
    return [int(level) for level in given]


class Editor(ABC):
    """Edits renders of training views towards an instruction, conditioned on the original views.

    Images are float tensors [B, 3, H, W] in [0, 1]; the result has the renders' shape, device and dtype.
    `views` are the dataset indices of the images (editors may cache per view); `seeds` seed each view's
    randomness (see `view_generator`).
    """

    name: str = "editor"
    device: Optional[torch.device] = None
    """Where the editor computes; None: on whatever device the images are on."""

    @abstractmethod
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
        """Return the edited images. `noise_levels`: each view's timestep to start from; default: drawn from its
        seed (see `noise_levels`)."""

    def describe(self) -> str:
        """One line for the console about what this editor is and where it runs."""
        return self.name


def check_batch(renders: Tensor, originals: Tensor, views: Sequence[int], seeds: Sequence[int]) -> List[int]:
    """Validate the shapes an editor receives; returns the batch as a list of view indices."""
    if renders.ndim != 4 or renders.shape[1] != 3:
        raise ValueError(f"renders must be [B, 3, H, W], got {tuple(renders.shape)}")
    if originals.shape != renders.shape:
        raise ValueError(f"originals {tuple(originals.shape)} and renders {tuple(renders.shape)} differ in shape")
    if not len(views) == len(seeds) == renders.shape[0]:
        raise ValueError("one view index and one seed are needed per image")
    return list(views)
