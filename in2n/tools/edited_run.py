"""An in2n run as read from its folder: config, newest checkpoint, edited views, and the dataset it trained on.

Reads only files (config.yml, the checkpoint, the dataset); it never builds the pipeline or loads the diffusion
model, so it is quick and works on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.trainer import TrainerConfig
from torch import Tensor

from in2n.dataset_update.state import EditState, EditStateError
from in2n.errors import In2nError
from in2n.runs.checkpoints import load_checkpoint_file
from in2n.runs.folder import RunFolder


@dataclass
class EditedRun:
    """What an export needs from an in2n run."""

    checkpoint: Path
    """The newest checkpoint of the run."""
    step: int
    """The training step the checkpoint was written at."""
    edited_images: Dict[int, Tensor]
    """Edited training views by view index, uint8 [H, W, 3], at the resolution the run trained at."""
    num_views: int
    """Training views of the run."""


@dataclass
class SourceDataset:
    """The nerfstudio-data dataset a run trained on, as its dataparser saw it."""

    data_dir: Path
    """Folder that the paths in transforms.json are relative to."""
    transforms: Dict[str, Any]
    """The parsed transforms.json."""
    downscale_factor: int
    """The factor the run read images at: above 1, the dataparser read `images_<factor>/` copies."""
    train_files: List[Path]
    """The image file of each training view, in view order."""
    train_sizes: List[Tuple[int, int]]
    """(height, width) of each training view's camera."""


def read_edited_run(run: RunFolder) -> EditedRun:
    """The edit state in the run's newest checkpoint; a clear error for runs that edited nothing."""
    checkpoint = run.require_checkpoint("--load-config", "export")
    state = load_checkpoint_file(checkpoint)
    try:
        edit = EditState.of_checkpoint(state)
    except EditStateError as error:
        raise In2nError(f"{checkpoint}: {error}") from None
    if edit is None:
        raise In2nError(
            f"{run.config_file} is a {run.config.method_name} run: its checkpoints hold no edit. Pass the config.yml "
            "of an in2n run (outputs/<scene>/in2n/<timestamp>/config.yml)."
        )
    if not edit.edited_images:
        raise In2nError(
            f"{checkpoint} (step {state['step']}) holds no edited view yet. Continue the edit (ns-train in2n "
            "--load-dir with this run's nerfstudio_models) until views are edited, then export."
        )
    return EditedRun(
        checkpoint=checkpoint,
        step=int(state["step"]),
        edited_images=edit.edited_images,
        num_views=edit.num_views,
    )


def read_source_dataset(config: TrainerConfig, data: Optional[Path]) -> SourceDataset:
    """Parse the run's dataset with the run's own dataparser options (`data` replaces its location)."""
    datamanager = config.pipeline.datamanager
    parser_config = datamanager.dataparser
    if not isinstance(parser_config, NerfstudioDataParserConfig):
        raise In2nError(
            f"the run read its data with {type(parser_config).__name__}; exporting supports nerfstudio-data "
            "datasets (transforms.json), the format ns-process-data writes."
        )
    if getattr(datamanager, "camera_res_scale_factor", 1.0) != 1.0:
        raise In2nError(
            f"the run resized its images on loading (--pipeline.datamanager.camera-res-scale-factor "
            f"{datamanager.camera_res_scale_factor}); exporting supports the dataset's own resolutions and "
            "--downscale-factor only."
        )
    location = Path(data or datamanager.data or parser_config.data)
    if not location.exists():
        raise In2nError(
            f"the run's dataset {location} is not there (a relative path is read from the current folder). Pass "
            "its location with --data."
        )
    transforms_path = location if location.suffix == ".json" else location / "transforms.json"
    if not transforms_path.is_file():
        raise In2nError(f"{location} holds no transforms.json; pass the nerfstudio-data folder the run used (--data).")
    parser = dataclasses.replace(parser_config, data=location).setup()
    outputs = parser.get_dataparser_outputs("train")
    cameras = outputs.cameras
    return SourceDataset(
        data_dir=transforms_path.parent,
        transforms=json.loads(transforms_path.read_text()),
        downscale_factor=int(parser.downscale_factor),
        train_files=list(outputs.image_filenames),
        train_sizes=[(int(h), int(w)) for h, w in zip(cameras.height.flatten(), cameras.width.flatten(), strict=True)],
    )


def check_run_matches_dataset(run: EditedRun, dataset: SourceDataset) -> None:
    if run.num_views != len(dataset.train_files):
        raise In2nError(
            f"the run edited {run.num_views} training views, but its dataset now gives {len(dataset.train_files)}. "
            "Export with the dataset the run trained on (--data)."
        )
    for view, image in run.edited_images.items():
        if tuple(image.shape[:2]) != dataset.train_sizes[view]:
            height, width = dataset.train_sizes[view]
            raise In2nError(
                f"view {view} was edited at {image.shape[1]}x{image.shape[0]} pixels, but the dataset gives "
                f"{width}x{height} for it. Export with the dataset the run trained on (--data)."
            )
