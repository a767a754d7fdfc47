"""ns-render the original implementation's way: with the diffusion model loaded first, as its every command did."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict

import torch

from bench.profiling import make_resident
from in2n.editors.loading import load_ip2p_pipeline


def render_reference_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Load InstructPix2Pix and read all its weights (onto the GPU on CUDA, as the original's pipeline did when it was
    built), then run the real ns-render command with `spec["args"]`."""
    from nerfstudio.scripts.render import entrypoint

    start = time.perf_counter()
    diffusion = load_ip2p_pipeline(spec["model"], torch.float32)
    networks = [module for module in diffusion.components.values() if isinstance(module, torch.nn.Module)]
    if spec["device"].startswith("cuda"):
        for network in networks:
            network.to(spec["device"])
    make_resident(*networks)
    load_s = time.perf_counter() - start
    sys.argv = ["ns-render", *spec["args"]]
    entrypoint()
    del diffusion, networks
    return {"ip2p_load_s": load_s}
