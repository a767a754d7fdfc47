"""The device a run measures on: choosing it, waiting for its queued work, warming it up, freeing its memory."""

from __future__ import annotations

import gc
import time
import warnings
from typing import Optional

import torch

from bench.config import BenchError, DeviceName

WARM_UP_SIDE = 4096
"""Side of the fp16 matrices multiplied to warm a GPU up: big enough to keep every SM busy."""


def cuda_available() -> bool:
    # Some builds warn when no driver is found; the benchmark says so itself, in one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.cuda.is_available()


def cuda_device_count() -> int:
    """The CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if cuda_available() else 0


def resolve_device(requested: Optional[DeviceName]) -> DeviceName:
    """The device asked for, or cuda when available and else cpu; BenchError if CUDA is asked for and missing."""
    available = cuda_available()
    if requested is None:
        return "cuda" if available else "cpu"
    if requested == "cuda" and not available:
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a build without CUDA"
        raise BenchError(
            f"--device cuda: no CUDA device is available on this machine (torch {torch.__version__} is {build}). "
            "Run with --device cpu, or on a machine with an NVIDIA GPU."
        )
    return requested


def synchronize(device: str) -> None:
    """Wait for the work queued on the device, so that a clock read afterwards includes it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def warm_up(device: str, seconds: float) -> float:
    """Keep the GPU busy for `seconds` so its clocks have ramped up (they idle at a few hundred MHz and rise over
    seconds under load) before anything is timed; nothing to do on the CPU. Returns the seconds spent."""
    if not device.startswith("cuda") or seconds <= 0:
        return 0.0
    a = torch.randn(WARM_UP_SIDE, WARM_UP_SIDE, device=device, dtype=torch.float16)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            a = (a @ a).clamp_(-1.0, 1.0)
        synchronize(device)
    del a
    free_memory(device)
    return time.perf_counter() - start


def free_memory(device: str) -> None:
    """Drop unreferenced objects and, on CUDA, return the allocator's cached blocks, so the next measurement starts
    from what is really in use."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
