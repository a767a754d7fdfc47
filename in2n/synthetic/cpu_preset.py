"""A nerfacto small enough to train on a laptop CPU in minutes, as config values and as command-line options.

Shared by the demo, the tests and the benchmark; an in2n run must repeat the model options of the nerfacto
run it edits, so both take them from here.
"""

from __future__ import annotations

from typing import Any, Dict, List

SMALL_MODEL: Dict[str, Any] = {
    "implementation": "torch",
    "num_levels": 8,
    "log2_hashmap_size": 15,
    "hidden_dim": 32,
    "hidden_dim_color": 32,
    "num_proposal_samples_per_ray": (32, 16),
    "num_nerf_samples_per_ray": 16,
    "eval_num_rays_per_chunk": 4096,
}
"""nerfacto's model options (shape-affecting ones included) for the small CPU model, as config field values."""


def model_args(options: Dict[str, Any]) -> List[str]:
    """Model options as ns-train takes them: `--pipeline.model.<name> <value> ...`."""
    args: List[str] = []
    for name, value in options.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        args += [f"--pipeline.model.{name.replace('_', '-')}", *map(str, values)]
    return args


SMALL_MODEL_ARGS: List[str] = model_args(SMALL_MODEL)
"""SMALL_MODEL as ns-train options."""

CPU_TRAINER_ARGS: List[str] = [
    "--machine.device-type", "cpu",
    "--mixed-precision", "False",
    "--viewer.quit-on-train-completion", "True",
]  # fmt: skip
"""Trainer options every CPU run needs."""

SMALL_SPLAT_ARGS: List[str] = [
    "--pipeline.model.num-downscales", "0",
    "--steps-per-eval-image", "100000",
    "--steps-per-eval-all-images", "100000",
]  # fmt: skip
"""splatfacto on the small generated views (64x48): at full resolution from the start (splatfacto begins at a quarter
of it, 16x12 there), and without its eval renders, which a short CPU run does not need."""

SPLAT_EDIT_ARGS: List[str] = ["--optimizers.features-dc.optimizer.lr", "0.05"]
"""An edit of a few hundred steps on the CPU: splatfacto's colour learning rate (0.0025, tuned to refine colours over
30000 steps) moves a Gaussian's colour by about 0.1 in 150 steps, far from an edit; 20 times that converges the
negative editor's edit of the small scene in 150 steps (held-out views 17 dB closer to the edit than to the original,
measured)."""
