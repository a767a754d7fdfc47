"""Command-line options for a nerfacto small enough to train on a laptop CPU in minutes.

Shared by the demo, the tests and the benchmark; an in2n run must repeat the model options of the nerfacto
run it edits, so both take them from here.
"""

from __future__ import annotations

from typing import List

SMALL_MODEL_ARGS: List[str] = [
    "--pipeline.model.implementation", "torch",
    "--pipeline.model.num-levels", "8",
    "--pipeline.model.log2-hashmap-size", "15",
    "--pipeline.model.hidden-dim", "32",
    "--pipeline.model.hidden-dim-color", "32",
    "--pipeline.model.num-proposal-samples-per-ray", "32", "16",
    "--pipeline.model.num-nerf-samples-per-ray", "16",
    "--pipeline.model.eval-num-rays-per-chunk", "4096",
]  # fmt: skip
"""nerfacto's options (shape-affecting ones included) for the small CPU model."""

CPU_TRAINER_ARGS: List[str] = [
    "--machine.device-type", "cpu",
    "--mixed-precision", "False",
    "--viewer.quit-on-train-completion", "True",
]  # fmt: skip
"""Trainer options every CPU run needs."""
