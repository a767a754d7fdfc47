"""Single measurements behind the memory choices and the LPIPS start-up, each the first phase of a fresh process.

    python -m bench.probes memory --variant in2n-big --phase step --ray-chunks 4
    python -m bench.probes memory --variant in2n-lite --phase render --render-chunk 32768
    python -m bench.probes lpips --way pretrained     # or --way in2n

`memory`: the peak memory of one training step or of rendering a training view for an edit, nerfacto's default model
(pure-torch hash grid) on a generated 24-view 512x384 scene, on the CPU or CUDA. `lpips`: building nerfacto's LPIPS
network from torchvision's pretrained AlexNet, or as in2n builds it (feature layers only, weights from the checkpoint).
Both print one JSON line. bench/README.md ("Memory", "LPIPS without the AlexNet file") has the numbers.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

import torch
import tyro

from bench.memory import PhaseMemory
from bench.training import CUDA_SETUP
from in2n.synthetic.lpips_backbone import write_random_alexnet
from in2n.synthetic.scene import write_scene

Variant = Literal["in2n-big", "in2n", "in2n-lite"]


@dataclass
class MemoryProbe:
    """Peak memory of one phase of an in2n step."""

    variant: Variant = "in2n-lite"
    """The method whose pipeline config is used."""
    phase: Literal["step", "render"] = "step"
    """step: one training step (loss and backward); render: the render of training view 0 for an edit."""
    render_chunk: int = 4096
    """Rays per chunk of a whole-view render (--pipeline.model.eval-num-rays-per-chunk)."""
    ray_chunks: int = 1
    """Micro-batches of the training step (--pipeline.ray-chunks)."""
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    work: Path = Path(".bench/probes")
    """Where the scene and the random AlexNet go."""


@dataclass
class LpipsProbe:
    """Time and peak memory of building nerfacto's LPIPS network."""

    way: Literal["pretrained", "in2n"] = "in2n"
    work: Path = Path(".bench/probes")


def memory(probe: MemoryProbe) -> dict:
    from in2n.method_configs import in2n, in2n_big, in2n_lite

    scene = probe.work / "scene-512x384"
    if not (scene / "transforms.json").is_file():
        write_scene(scene, CUDA_SETUP.scene)
    method = {"in2n-big": in2n_big, "in2n": in2n, "in2n-lite": in2n_lite}[probe.variant]
    config = copy.deepcopy(method.config.pipeline)
    config.datamanager.data = scene
    config.editor = "negative"  # the editor plays no part in these phases
    config.model.implementation = "torch"
    config.model.eval_num_rays_per_chunk = probe.render_chunk
    config.ray_chunks = probe.ray_chunks
    torch.manual_seed(0)
    pipeline = config.setup(device=probe.device, test_mode="val")
    pipeline.train()
    memory = PhaseMemory.for_device(probe.device)

    def step() -> None:
        _, losses, _ = pipeline.get_train_loss_dict(1)
        sum(losses.values()).backward()

    start = time.perf_counter()
    with memory.phase(probe.phase):
        step() if probe.phase == "step" else pipeline.render_view(0)
    return {"probe": "memory", **vars(probe), "work": str(probe.work), "seconds": time.perf_counter() - start,
            "memory_mb": memory.report()}  # fmt: skip


def lpips(probe: LpipsProbe) -> dict:
    torch_home = probe.work / "torch_home"
    write_random_alexnet(torch_home)  # the pretrained way reads a file of the real size
    os.environ["TORCH_HOME"] = str(torch_home)
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    from in2n.model import lpips_weights_from_checkpoint

    memory = PhaseMemory.for_device("cpu")
    start = time.perf_counter()
    with memory.phase("build"):
        if probe.way == "pretrained":
            LearnedPerceptualImagePatchSimilarity(normalize=True)
        else:
            with lpips_weights_from_checkpoint():
                LearnedPerceptualImagePatchSimilarity(normalize=True)
    return {"probe": "lpips", "way": probe.way, "seconds": time.perf_counter() - start, "memory_mb": memory.report()}


def main() -> None:
    probe: Union[MemoryProbe, LpipsProbe] = tyro.extras.subcommand_cli_from_dict(
        {"memory": MemoryProbe, "lpips": LpipsProbe}
    )
    print(json.dumps(memory(probe) if isinstance(probe, MemoryProbe) else lpips(probe)))


if __name__ == "__main__":
    main()
