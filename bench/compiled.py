"""The compiled editor (`--pipeline.compile-editor`) against the same editor uncompiled: the time of a whole edit per
view in the steady state, what compiling costs once, and how far the two editors' images are apart.

Both editors load the same saved model in the same precision and edit the same renders with the same seeds. Whole
edits are timed without per-component hooks: a hook on the UNet would sit inside the compiled graph's call and
synchronise the device at every DDIM step. The compiled editor's first edits at a new batch size compile the UNet and
record its CUDA graphs; they are timed apart, as the one-off cost a run pays at its first edits.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, List, Tuple

from torch import Tensor

from bench.config import BenchConfig, Plan, Precision
from bench.devices import free_memory
from bench.memory import PhaseMemory
from bench.profiling import clock, median
from bench.progress import log
from in2n.dataset_update.loop import edit_seed
from in2n.editors.base import EditSettings
from in2n.editors.instruction import InstructionEditor

COMPILE_WARM_UP_EDITS = 3
"""Untimed edits of the compiled editor before its steady state: the first compiles the UNet, CUDA graph trees record
on a later call."""


def measure_compiled(
    config: BenchConfig,
    plan: Plan,
    eager: InstructionEditor,
    compiled: InstructionEditor,
    renders: Tensor,
    originals: Tensor,
    precision: Precision,
) -> Dict[str, Any]:
    """Per number of views in `plan.compile_views`: seconds per view of a whole edit, uncompiled and compiled
    (medians of `plan.repeats`), the compiled editor's first edits, and the largest difference of their images."""
    settings = EditSettings(diffusion_steps=config.steps)
    results: Dict[str, Any] = {"precision": precision, "steps": config.steps, "by_views": {}}
    memory = PhaseMemory.for_device(plan.device)
    for views in plan.compile_views:
        log(f"compiled editor, {precision}: {views} view(s) per edit (the first edits compile the UNet)")
        seeds = [edit_seed(config.seed, 0, i) for i in range(views)]
        edit = partial(edit_views, renders[:views], originals[:views], config.prompt, settings, seeds)
        first: List[float] = []
        with memory.phase(f"compiled, {views} views"):
            for _ in range(COMPILE_WARM_UP_EDITS):
                first.append(timed(plan.device, edit, compiled)[0])
        timed(plan.device, edit, eager)  # the eager editor's first edit at this shape, untimed
        eager_s, compiled_s = [], []
        for _ in range(plan.repeats):  # alternated, so that a drift of the clocks touches both alike
            seconds, eager_image = timed(plan.device, edit, eager)
            eager_s.append(seconds / views)
            seconds, compiled_image = timed(plan.device, edit, compiled)
            compiled_s.append(seconds / views)
        eager_median, compiled_median = median(eager_s), median(compiled_s)
        assert eager_median is not None and compiled_median is not None
        results["by_views"][str(views)] = {
            "eager_s": eager_median,
            "compiled_s": compiled_median,
            "ratio": compiled_median / eager_median,
            "first_edits_s": first,
            "still_compiled": compiled.compiled_unet is not None and compiled.compiled_unet.is_compiled,
            "max_abs_difference": float((compiled_image.float() - eager_image.float()).abs().max()),
        }
    results["memory"] = memory.report()
    free_memory(plan.device)
    return results


def edit_views(
    renders: Tensor, originals: Tensor, prompt: str, settings: EditSettings, seeds: List[int], editor: InstructionEditor
) -> Tensor:
    """One edit of these views (ids 0, 1, ...) by `editor`."""
    return editor.edit(renders, originals, list(range(len(renders))), prompt, settings, seeds)


def timed(device: str, call: Callable[..., Tensor], *args: Any) -> Tuple[float, Tensor]:
    """Seconds `call(*args)` took on `device`, and what it returned."""
    start = clock(device)
    value = call(*args)
    return clock(device) - start, value
