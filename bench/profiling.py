"""Timing: the components of an edit (VAE, UNet), the phases of a training step, medians and ours / reference ratios.

On CUDA every clock reading first waits for the work queued on the GPU, so a section's time is the time of its work.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from bench.devices import synchronize
from bench.memory import PhaseMemory
from in2n.editors.base import Editor

TIMED_METHODS = {
    "encode_renders": "vae_encode_render",
    "encode_conditions": "vae_encode_condition",
    "decode": "vae_decode",
}
"""Editor methods timed as a component of the edit, and the component they are counted in."""


def clock(device: str) -> float:
    """Seconds on a monotonic clock, once the device has finished the work queued so far."""
    synchronize(device)
    return time.perf_counter()


@dataclass
class Profile:
    """Seconds spent per component of edits, and every UNet call as (views in the call, seconds)."""

    device: str = "cpu"
    """Where the edits run (CUDA is synchronised at every reading)."""
    sections: Dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unet_calls: List[Tuple[int, float]] = field(default_factory=list)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = clock(self.device)
        try:
            yield
        finally:
            self.sections[name] += clock(self.device) - start


@contextmanager
def instrumented(profile: Profile, editor: Any, *others: Editor) -> Iterator[Profile]:
    """Time the VAE and UNet work of edits made through `editor` (and editors built on it) into `profile`.

    The methods in TIMED_METHODS are shadowed by timed wrappers on the instances, and the UNet gets forward hooks,
    so the package's own `edit` is what gets timed.
    """

    def timed(name: str, method: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            with profile.section(name):
                return method(*args, **kwargs)

        return wrapper

    wrapped = [
        (target, attribute) for target in (editor, *others) for attribute in TIMED_METHODS if hasattr(target, attribute)
    ]
    for target, attribute in wrapped:
        setattr(target, attribute, timed(TIMED_METHODS[attribute], getattr(target, attribute)))
    starts: List[float] = []

    def before(module, args) -> None:
        starts.append(clock(profile.device))

    def after(module, args, output) -> None:
        # A call carries three rows per view: text and image, image only, neither.
        profile.unet_calls.append((args[0].shape[0] // 3, clock(profile.device) - starts.pop()))

    hooks = [editor.unet.register_forward_pre_hook(before), editor.unet.register_forward_hook(after)]
    try:
        yield profile
    finally:
        for target, attribute in wrapped:
            delattr(target, attribute)
        for hook in hooks:
            hook.remove()


def timed_edit(
    profile: Profile, editor: Any, edit: Callable[..., Tensor], *args: Any, wrappers: Sequence[Editor] = ()
) -> Tensor:
    """Run `edit(*args)` with its components timed into `profile`; the whole call is the "total" section."""
    with instrumented(profile, editor, *wrappers), profile.section("total"):
        return edit(*args)


def make_resident(*modules: torch.nn.Module) -> None:
    """Read every weight once.

    diffusers memory-maps the saved weights, so they only take memory (and page-fault time) when first read; the
    first UNet pass would pay for it. The original moved the model to the GPU at load time, which reads every weight.
    """
    with torch.no_grad():
        for module in modules:
            for tensor in module.state_dict().values():
                tensor.sum()


class Phases:
    """Seconds of every call of each named phase, and the phases' peak memory (see `PhaseMemory`)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: Dict[str, List[float]] = defaultdict(list)
        self.memory = PhaseMemory.for_device(device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        with self.memory.phase(name):
            start = clock(self.device)
            try:
                yield
            finally:
                self.seconds[name].append(clock(self.device) - start)

    def wrap(self, name: str, function: Callable) -> Callable:
        """`function`, with every call measured as phase `name`."""

        def measured(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return measured


def median(values: Sequence[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def median_summary(summaries: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Numbers: the median over the summaries; flags: whether any is set; anything else: the first summary's."""
    merged: Dict[str, Any] = {}
    for key, first in summaries[0].items():
        values = [summary[key] for summary in summaries]
        if isinstance(first, bool):
            merged[key] = any(values)
        elif isinstance(first, (int, float)):
            merged[key] = statistics.median(values)
        else:
            merged[key] = first
    return merged


def ratios(ours: Dict[str, Any], reference: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """ours / reference for every number both have (None where the reference is 0 or missing)."""
    return {
        key: (value / reference[key] if isinstance(reference[key], (int, float)) and reference[key] else None)
        for key, value in ours.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key in reference
    }
