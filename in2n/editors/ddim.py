"""Deterministic DDIM sampling over explicit per-view timesteps.

The edit starts from a partly noised render, so each view runs its own short schedule from its sampled
noise level down to zero. Writing the update out (rather than reconfiguring a scheduler object per edit)
lets views with different noise levels share one batched UNet call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor

from in2n.editors.base import NUM_TRAIN_TIMESTEPS


@dataclass(frozen=True)
class DdimSchedule:
    """The timesteps one view is denoised through, and the timestep each step lands on (< 0: clean)."""

    timesteps: Tuple[int, ...]
    previous: Tuple[int, ...]

    def __len__(self) -> int:
        return len(self.timesteps)


def ddim_schedule(noise_level: int, steps: int, steps_offset: int = 1, scale_with_noise: bool = False) -> DdimSchedule:
    """The DDIM timesteps for an edit from `noise_level` (0..1000).

    By default the `steps` steps are spread evenly over [0, noise_level] ("leading" spacing, as DDIM with
    `num_train_timesteps = noise_level`): every edit costs `steps` UNet passes, whatever its noise level.
    With `scale_with_noise`, the steps are those of the full 1000-step grid that lie below the noise level,
    as diffusers' img2img `strength` does: an edit at low noise runs proportionally fewer passes.
    """
    count, ratio = _spacing(noise_level, steps, scale_with_noise)
    last = NUM_TRAIN_TIMESTEPS - 1
    if (count - 1) * ratio + steps_offset > last:
        # Only at the very top (noise level 1000 with as many steps): start one grid step lower, on the grid.
        count, ratio = _spacing(last + 1 - steps_offset, steps, scale_with_noise)
    timesteps = tuple(i * ratio + steps_offset for i in reversed(range(count)))
    return DdimSchedule(timesteps=timesteps, previous=tuple(t - ratio for t in timesteps))


def _spacing(noise_level: int, steps: int, scale_with_noise: bool) -> Tuple[int, int]:
    """(number of steps, timesteps between them) of an edit from `noise_level`."""
    if scale_with_noise:
        return max(1, min(steps, int(steps * noise_level / NUM_TRAIN_TIMESTEPS))), NUM_TRAIN_TIMESTEPS // steps
    count = max(1, min(steps, noise_level))
    return count, max(1, noise_level // count)


@dataclass(frozen=True)
class BatchedSchedules:
    """The schedules of a batch of views, run together: aligned at their end, so a step only includes the views that
    still have that many steps to go. Views are put in order of schedule length, longest first, so that the views in a
    step are always the first `active[k]` of that order: slices of the batch, with no index tensors to build per step.
    """

    order: Tuple[int, ...]
    """The batch's views (positions in it), longest schedule first."""
    active: Tuple[int, ...]
    """For each step, how many views (from the front of `order`) take part."""
    timesteps: Tensor
    """[steps, views] timestep of each view at each step, views in `order`; unused where a view takes no part."""
    previous: Tensor
    """[steps, views] timestep each step lands on (< 0: clean), laid out as `timesteps`."""

    @staticmethod
    def of(schedules: Sequence[DdimSchedule], device: torch.device) -> BatchedSchedules:
        """Built once per edit, on the device: the steps then read slices of it and never wait for the host."""
        order = tuple(sorted(range(len(schedules)), key=lambda i: -len(schedules[i])))  # stable: ties keep order
        longest = len(schedules[order[0]])
        table = [[[0] * len(order) for _ in range(longest)] for _ in range(2)]
        active = []
        for k in range(longest):
            running = [i for i in order if len(schedules[i]) >= longest - k]
            active.append(len(running))
            for column, i in enumerate(running):
                position = k - (longest - len(schedules[i]))
                table[0][k][column] = schedules[i].timesteps[position]
                table[1][k][column] = schedules[i].previous[position]
        tables = torch.tensor(table, dtype=torch.long, device=device)
        return BatchedSchedules(order=order, active=tuple(active), timesteps=tables[0], previous=tables[1])

    @property
    def reordered(self) -> bool:
        """Whether `order` differs from the batch's own."""
        return self.order != tuple(range(len(self.order)))


class DdimSampler:
    """DDIM (eta = 0) with the noise schedule of a diffusers scheduler config."""

    def __init__(self, scheduler_config: dict, device: torch.device) -> None:
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(scheduler_config)
        if scheduler.config.prediction_type != "epsilon":
            raise ValueError(f"only epsilon-prediction models are supported, not {scheduler.config.prediction_type}")
        self.steps_offset = int(scheduler.config.steps_offset)
        self.clip_sample = float(scheduler.config.clip_sample_range) if scheduler.config.clip_sample else None
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.final_alpha_cumprod = float(scheduler.final_alpha_cumprod)

    def alpha(self, timesteps: Tensor) -> Tensor:
        """alpha-bar at each timestep, broadcastable over latents [B, C, h, w]; negative -> the clean end."""
        clean = torch.full(timesteps.shape, self.final_alpha_cumprod, device=timesteps.device)
        values = torch.where(timesteps >= 0, self.alphas_cumprod[timesteps.clamp(min=0)], clean)
        return values.view(-1, 1, 1, 1)

    def add_noise(self, latents: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        alpha = self.alpha(timesteps)
        return alpha.sqrt() * latents + (1.0 - alpha).sqrt() * noise

    def step(self, noise_pred: Tensor, timesteps: Tensor, previous: Tensor, latents: Tensor) -> Tensor:
        """One deterministic DDIM update of `latents` from `timesteps` to `previous` (all per sample)."""
        alpha, alpha_prev = self.alpha(timesteps), self.alpha(previous)
        original = (latents - (1.0 - alpha).sqrt() * noise_pred) / alpha.sqrt()
        if self.clip_sample is not None:
            original = original.clamp(-self.clip_sample, self.clip_sample)
        return alpha_prev.sqrt() * original + (1.0 - alpha_prev).sqrt() * noise_pred
