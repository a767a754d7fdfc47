"""Check a pipeline config before anything slow happens, and say in plain words what to change."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, List

from in2n.editing.base import NUM_TRAIN_TIMESTEPS
from in2n.editing.devices import resolve_device
from in2n.errors import In2nError

if TYPE_CHECKING:
    from in2n.pipeline import In2nPipelineConfig

MAX_PROMPT_CHARACTERS = 1000
"""CLIP reads 77 tokens (a few hundred characters); a prompt far beyond that is a mistake, not an instruction."""


def config_problems(config: In2nPipelineConfig) -> List[str]:
    """Every problem with the options, each as one sentence naming the option and what to do."""
    problems: List[str] = []
    if config.editor == "ip2p" and not config.prompt.strip():
        problems.append(
            '--pipeline.prompt is empty: give the edit instruction, e.g. --pipeline.prompt "make it snowy".'
        )
    if len(config.prompt) > MAX_PROMPT_CHARACTERS:
        problems.append(
            f"--pipeline.prompt is {len(config.prompt)} characters long; the text encoder reads only about the first "
            f"300 (77 tokens). Shorten it to under {MAX_PROMPT_CHARACTERS} characters."
        )
    for option, value in (
        ("guidance-scale", config.guidance_scale),
        ("image-guidance-scale", config.image_guidance_scale),
    ):
        if not 0 <= value < math.inf:  # also rejects NaN
            problems.append(
                f"--pipeline.{option} is {value}; it must be 0 or more, and finite (typical: 7.5 text, 1.5 image)."
            )
    for option, value in (("lower-bound", config.lower_bound), ("upper-bound", config.upper_bound)):
        if not 0.0 <= value <= 1.0:
            problems.append(f"--pipeline.{option} is {value}; noise-level bounds are fractions between 0 and 1.")
    if (
        0.0 <= config.lower_bound <= 1.0
        and 0.0 <= config.upper_bound <= 1.0
        and config.lower_bound > config.upper_bound
    ):
        problems.append(
            f"--pipeline.lower-bound {config.lower_bound} is above --pipeline.upper-bound {config.upper_bound}; "
            "swap them (defaults 0.02 and 0.98)."
        )
    for option, value in (
        ("edit-rate", config.edit_rate),
        ("edit-count", config.edit_count),
        ("diffusion-steps", config.diffusion_steps),
    ):
        if value < 1:
            problems.append(f"--pipeline.{option} is {value}; it must be at least 1.")
    if config.diffusion_steps > NUM_TRAIN_TIMESTEPS:
        problems.append(
            f"--pipeline.diffusion-steps is {config.diffusion_steps}; the diffusion process has only "
            f"{NUM_TRAIN_TIMESTEPS} steps. Use at most {NUM_TRAIN_TIMESTEPS} (default 20)."
        )
    if config.log_strips_every < 0:
        problems.append(
            f"--pipeline.log-strips-every is {config.log_strips_every}; use 0 to turn the strips off, or a number of "
            "edits."
        )
    if config.max_edit_size < 64:
        problems.append(f"--pipeline.max-edit-size is {config.max_edit_size}; use at least 64 (default 512).")
    problems += patch_problems(config)
    if config.editor == "ip2p" and config.ip2p_device is not None:
        try:
            resolve_device(config.ip2p_device)
        except In2nError as error:
            problems.append(str(error))
    return problems


def patch_problems(config: In2nPipelineConfig) -> List[str]:
    datamanager, model = config.datamanager, config.model
    patch = getattr(datamanager, "patch_size", 1)
    problems = []
    if getattr(model, "use_lpips", False):
        if patch < 2:
            problems.append(
                "LPIPS needs ray patches: set --pipeline.datamanager.patch-size 32 (and "
                "--pipeline.model.patch-size 32), or turn LPIPS off with --pipeline.model.use-lpips False."
            )
        elif getattr(model, "patch_size", patch) != patch:
            problems.append(
                f"--pipeline.datamanager.patch-size {patch} and --pipeline.model.patch-size {model.patch_size} differ; "
                "set both to the same value."
            )
    rays = getattr(datamanager, "train_num_rays_per_batch", 0)
    if patch > 1 and rays < patch * patch:
        problems.append(
            f"--pipeline.datamanager.train-num-rays-per-batch {rays} is less than one {patch}x{patch} patch; use a "
            f"multiple of {patch * patch}."
        )
    return problems


def check_pipeline_config(config: In2nPipelineConfig) -> None:
    problems = config_problems(config)
    if problems:
        raise In2nError("\n".join(problems))
