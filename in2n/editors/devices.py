"""Where and in which precision the diffusion model runs."""

from __future__ import annotations

import torch

from in2n.errors import ValueProblem


def resolve_device(name: str) -> torch.device:
    """Parse a device name and check that the device exists here; a ValueProblem saying what does otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueProblem(name, "not a device name. Use cpu, cuda, cuda:N (N counts from 0) or mps.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueProblem(
                name,
                "a CUDA device, but no CUDA device is available on this machine. Use cpu, or run on a machine "
                "with an NVIDIA GPU and a CUDA build of torch.",
            )
        if device.index is not None and device.index >= count:
            raise ValueProblem(
                name, f"no such device: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueProblem(name, "Apple's MPS backend is not available here. Use cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueProblem(name, "only cpu, cuda and mps devices are supported.")
    return device


def diffusion_dtype(device: torch.device, full_precision: bool) -> torch.dtype:
    """fp32 or fp16 as asked, except that fp16 is not offered on the CPU (slow or unsupported there)."""
    if full_precision or device.type == "cpu":
        return torch.float32
    return torch.float16


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one ("cuda" without an index is the current CUDA device)."""

    def canonical(device: torch.device) -> torch.device:
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return device

    return canonical(a) == canonical(b)
