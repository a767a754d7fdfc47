"""What the numbers were measured on: CPU, memory, torch, and on CUDA the GPU, CUDA, cuDNN and tiny-cuda-nn."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import Any, Dict, Optional

import torch


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gb() -> Optional[float]:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    total = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal"))
    return int(total.split()[1]) / 1024**2


def gpu(device: str) -> Dict[str, Any]:
    """The CUDA device and the CUDA stack torch runs it with."""
    properties = torch.cuda.get_device_properties(device)
    return {
        "name": properties.name,
        "memory_gb": properties.total_memory / 1024**3,
        "compute_capability": f"{properties.major}.{properties.minor}",
        "visible_devices": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def machine(device: str) -> Dict[str, Any]:
    """The machine, the software and the device of a run."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": ram_gb(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "gpu": gpu(device) if device.startswith("cuda") else None,
        # Whether nerfacto *used* it is reported by each training measurement ("tcnn").
        "tcnn_installed": importlib.util.find_spec("tinycudann") is not None,
    }
