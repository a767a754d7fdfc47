"""A training step's rays in equal micro-batches, with the gradients accumulated: the same step in less memory.

The step's rays are sampled once, split into `chunks` equal parts of whole LPIPS patches, and each part's loss is
back-propagated at once, scaled by 1 / chunks, before the next part runs. Every loss of nerfacto and in2n is a mean
over rays or patches, or a term of the whole step (the camera optimiser's regulariser) that each part repeats, so the
mean over equal parts equals the loss of the whole step, and so do the accumulated gradients. The activations of one
part are alive at a time instead of the whole step's, at the cost of more, smaller kernel launches.

nerfacto's proposal sampler decides at every call whether its proposal networks train in this step (every step at
first, then every few steps), and a call that trains them restarts its count. The parts of a step are several calls:
each is started from the count the step began with (`SamplerSchedules`), so every part decides as the whole step
does, and the proposal networks get the gradients of all of the step's rays or of none.

The last part is not back-propagated here: its loss is returned, combined with the earlier parts' (detached) values so
that the losses logged are the whole step's, and the trainer's own backward call adds the last part's gradients.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import Tensor, nn

StepOutputs = Tuple[Dict[str, Any], Dict[str, Tensor], Dict[str, Any]]
"""What nerfstudio's get_train_loss_dict returns: model outputs, losses, metrics."""


MICRO_BATCH_RAYS = 4096
"""Rays per micro-batch when their number is chosen automatically: a quarter of in2n's 16384-ray step."""


def automatic_chunks(num_rays: int, patch_rays: int, max_rays: int = MICRO_BATCH_RAYS) -> int:
    """The fewest equal parts of whole patches with at most `max_rays` rays each (whole patches can need more)."""
    patches = max(1, num_rays // patch_rays)
    return next(d for d in range(1, patches + 1) if patches % d == 0 and (num_rays // d <= max_rays or d == patches))


def chunk_slices(num_rays: int, chunks: int, patch_rays: int) -> List[slice]:
    """`chunks` equal slices of the step's rays, each of whole patches of `patch_rays` rays."""
    patches, remainder = divmod(num_rays, patch_rays)
    if remainder or patches % chunks:
        raise ValueError(f"{num_rays} rays in patches of {patch_rays} do not split into {chunks} equal parts")
    size = num_rays // chunks
    return [slice(k * size, (k + 1) * size) for k in range(chunks)]


def slice_batch(batch: Dict[str, Any], part: slice, num_rays: int) -> Dict[str, Any]:
    """The batch's per-ray entries for one part (other entries as they are)."""
    return {
        key: value[part] if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == num_rays else value
        for key, value in batch.items()
    }


def accumulate(
    parts: List[slice],
    step_part: Callable[[slice], StepOutputs],
    backward: Callable[[Tensor], None],
) -> StepOutputs:
    """Run `step_part` on each part, back-propagating all but the last one's loss (scaled by 1 / parts).

    Returns the last part's outputs, and losses and metrics that are the means over the parts; only the last part's
    share of the losses carries a graph.
    """
    count = len(parts)
    earlier_losses: Dict[str, Tensor] = {}
    earlier_metrics: Dict[str, Any] = {}
    for part in parts[:-1]:
        _, losses, metrics = step_part(part)
        backward(sum(losses.values()) / count)
        for key, value in losses.items():
            earlier_losses[key] = earlier_losses.get(key, 0.0) + value.detach()
        for key, value in metrics.items():
            earlier_metrics[key] = earlier_metrics.get(key, 0.0) + detached(value)
    outputs, losses, metrics = step_part(parts[-1])
    combined_losses = {key: (value + earlier_losses.get(key, 0.0)) / count for key, value in losses.items()}
    combined_metrics = {key: (detached(v) + earlier_metrics.get(key, 0.0)) / count for key, v in metrics.items()}
    return outputs, combined_losses, combined_metrics


class SamplerSchedules:
    """The proposal samplers' update counters of a model as a step begins, put back before each part of the step."""

    COUNTER = "_steps_since_update"
    """nerfstudio's ProposalNetworkSampler: calls since its networks last trained (set by its step callback)."""

    def __init__(self, model: nn.Module) -> None:
        self.samplers = [module for module in model.modules() if hasattr(module, self.COUNTER)]
        self.counts = [getattr(sampler, self.COUNTER) for sampler in self.samplers]

    def restore(self) -> None:
        for sampler, count in zip(self.samplers, self.counts, strict=True):
            setattr(sampler, self.COUNTER, count)


def detached(value: Any) -> Any:
    return value.detach() if isinstance(value, torch.Tensor) else value
