"""Check a pipeline config before anything slow happens, and say in plain words what to change."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List

from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from in2n.dataset_update.loop import EditLoopConfig
from in2n.editors.base import NUM_TRAIN_TIMESTEPS
from in2n.editors.devices import resolve_device
from in2n.editors.factory import EditorConfig
from in2n.errors import In2nError, ValueProblem

MAX_PROMPT_CHARACTERS = 1000
"""CLIP reads 77 tokens (a few hundred characters); a prompt far beyond that is a mistake, not an instruction."""


def edit_problems(config: EditLoopConfig, prompt_needed: bool) -> List[str]:
    """Every problem with the edit loop's options, each as one sentence naming the option and what to do."""
    problems: List[str] = []
    if prompt_needed and not config.prompt.strip():
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
        ("pass-every", config.pass_every),
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
    problems += convergence_problems(config) + region_problems(config)
    return problems


def convergence_problems(config: EditLoopConfig) -> List[str]:
    problems = []
    if config.min_passes < 2:
        problems.append(f"--pipeline.min-passes is {config.min_passes}; a trend needs at least 2 passes (default 5).")
    if not 0 <= config.converge_tolerance < math.inf:
        problems.append(
            f"--pipeline.converge-tolerance is {config.converge_tolerance}; give 0 or more dB per pass, finite "
            "(default 0.1)."
        )
    return problems


def region_problems(config: EditLoopConfig) -> List[str]:
    """The edit box must enclose a volume, and only one kind of region can be given."""
    problems = []
    box = config.edit_box
    if box is not None:
        if not all(math.isfinite(v) for v in box):
            problems.append(f"--pipeline.edit-box {' '.join(map(str, box))}: every coordinate must be a finite number.")
        else:
            flat = [axis for axis, low, high in zip("XYZ", box[:3], box[3:], strict=True) if not low < high]
            if flat:
                problems.append(
                    f"--pipeline.edit-box {' '.join(f'{v:g}' for v in box)} is empty or inverted along "
                    f"{', '.join(flat)}: give the low corner then the high corner, X0 Y0 Z0 X1 Y1 Z1, each low value "
                    "below its high one, in the frame the run trained in (the frame the viewer shows)."
                )
        if config.edit_masks != "none":
            problems.append(
                "--pipeline.edit-box and --pipeline.edit-masks dataset both limit the edit; give one of them."
            )
    return problems


def ray_chunk_problems(chunks: int, datamanager: Any) -> List[str]:
    """Micro-batches must be equal and of whole patches."""
    patch = getattr(datamanager, "patch_size", 1)
    patches = getattr(datamanager, "train_num_rays_per_batch", 0) // (patch * patch)
    if chunks < 1:
        return [f"--pipeline.ray-chunks is {chunks}; it must be at least 1 (1: no micro-batches)."]
    if patches % chunks:
        divisors = ", ".join(str(d) for d in range(1, patches + 1) if patches % d == 0)
        unit = f"{patch}x{patch} patches" if patch > 1 else "rays"
        return [
            f"--pipeline.ray-chunks {chunks} does not divide a step's {patches} {unit} into equal parts; use one of "
            f"{divisors}."
        ]
    return []


def editor_problems(config: EditorConfig) -> List[str]:
    """Every problem with the editor's options."""
    problems: List[str] = []
    if config.max_edit_size is not None and config.max_edit_size < 64:
        problems.append(
            f"--pipeline.max-edit-size is {config.max_edit_size}; use at least 64, or leave it unset for the editor's "
            "native size (512 for InstructPix2Pix, 768 for SDXL InstructPix2Pix)."
        )
    if config.editor == "ip2p" and config.ip2p_device is not None:
        try:
            resolve_device(config.ip2p_device)
        except ValueProblem as problem:
            problems.append(str(problem.for_option("--pipeline.ip2p-device")))
    return problems


def patch_problems(datamanager: Any, model: Any) -> List[str]:
    """LPIPS needs whole ray patches, of one size in the datamanager and the model."""
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


def dataset_problems(datamanager: Any) -> List[str]:
    """The dataset --data names must be there, and for nerfstudio-data hold a transforms.json: checked before the
    data and the diffusion model are loaded, so that a wrong path fails in a second."""
    parser = datamanager.dataparser
    location = datamanager.data if datamanager.data is not None else parser.data
    given = "" if datamanager.data is not None or location != Path() else " (the current folder: no --data was given)"
    if not Path(location).exists():
        return [f"--data {location} does not exist. Pass the dataset folder of the nerfacto run you edit."]
    if not isinstance(parser, NerfstudioDataParserConfig):
        return []
    transforms = Path(location) if Path(location).suffix == ".json" else Path(location) / "transforms.json"
    if transforms.is_file():
        return []
    return [
        f"--data {location}{given} is not a nerfstudio dataset: it holds no transforms.json, the file from which the "
        "nerfstudio-data dataparser reads each image's path and camera. Make one from your photos or video with "
        f"`ns-process-data images --data <photos> --output-dir {location}` (or `ns-process-data video ...`), and "
        "pass the same --data as the nerfacto run you edit."
    ]


def raise_problems(problems: List[str]) -> None:
    """One In2nError listing every problem, one per line; nothing if there is none."""
    if problems:
        raise In2nError("\n".join(problems))
