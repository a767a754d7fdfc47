"""`in2n-export`: the edited training views of an in2n run as an ordinary nerfstudio dataset.

The export is the run's dataset (transforms.json and the files it names) with each edited training view's image
replaced by its edit, so any method trains on it: `ns-train nerfacto --data OUTPUT`. Views the edit has not
reached yet and the eval views keep their original images; masks and depth maps are copied unchanged.

Everything is written at the resolution the run trained at. If the run read downscaled copies (`images_2/` for
`--downscale-factor 2`), images, masks and depth maps are taken from those copies and the intrinsics in
transforms.json are scaled to match: the export is a dataset to be read at downscale factor 1.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Optional

import tyro
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from torch import Tensor

from in2n.errors import In2nError
from in2n.runs.folder import read_run_folder
from in2n.tools.edited_run import (
    EditedRun,
    SourceDataset,
    check_run_matches_dataset,
    read_edited_run,
    read_source_dataset,
)

PIXEL_KEYS = ("fl_x", "fl_y", "cx", "cy", "fisheye_crop_radius")
"""Intrinsics in pixels, which scale with the image."""
SIZE_KEYS = ("w", "h")
"""Image sizes, which nerfstudio scales and rounds down."""
FRAME_FILES = (("mask_path", "masks_"), ("depth_file_path", "depths_"))
"""Per-frame files besides the image, with the folder prefix of their downscaled copies."""


@dataclass
class ExportEditedDataset:
    """Write the edited views of an in2n run as a nerfstudio dataset (transforms.json + images) that any method
    trains on. Reads the run's newest checkpoint and its dataset; the diffusion model is not loaded."""

    load_config: Path
    """config.yml of the in2n run, e.g. outputs/<scene>/in2n/<timestamp>/config.yml."""
    output_dir: Path
    """Folder to write the dataset to; it must be new or empty, unless --overwrite True."""
    data: Optional[Path] = None
    """The run's dataset, if it moved since the run (default: the --data the run used)."""
    overwrite: bool = False
    """Replace what --output-dir holds."""

    def main(self) -> None:
        folder = read_run_folder(self.load_config, "--load-config")
        run = read_edited_run(folder)
        dataset = read_source_dataset(folder.config, self.data)
        check_output_dir(self.output_dir, self.overwrite, protected=[dataset.data_dir, folder.folder])
        check_run_matches_dataset(run, dataset)
        write_atomically(self.output_dir, lambda folder: export(run, dataset, folder))
        CONSOLE.print(
            f"Wrote {len(dataset.transforms['frames'])} frames to {self.output_dir}: {len(run.edited_images)} of "
            f"{run.num_views} training views edited (step {run.step}), the others as captured. Train on it with "
            f"`ns-train nerfacto --data {self.output_dir}`."
        )


def export(run: EditedRun, dataset: SourceDataset, folder: Path) -> None:
    """Write the dataset into `folder`: transforms.json, the edited views, and copies of every other file."""
    factor = dataset.downscale_factor
    edited_by_file = {dataset.train_files[view].resolve(): image for view, image in run.edited_images.items()}
    transforms = scaled_intrinsics(dataset.transforms, 1.0 / factor)
    renamed: Dict[PurePosixPath, str] = {}
    for frame in transforms["frames"]:
        source = stored_file(dataset.data_dir, frame["file_path"], factor, "images_")
        edited = edited_by_file.pop(source.resolve(), None)
        if edited is None:
            copy_file(source, folder / relative_path(frame["file_path"]))
        else:
            renamed.update(write_edited_view(frame, edited, folder))
        for key, prefix in FRAME_FILES:
            if key in frame:
                copy_file(stored_file(dataset.data_dir, frame[key], factor, prefix), folder / relative_path(frame[key]))
    if edited_by_file:
        raise In2nError(
            f"{next(iter(edited_by_file))} is a training image of the run but no frame of transforms.json names it. "
            "Export with the dataset the run trained on (--data)."
        )
    for split in ("train_filenames", "val_filenames", "test_filenames"):
        if split in transforms:
            transforms[split] = [renamed.get(PurePosixPath(name), name) for name in transforms[split]]
    if "ply_file_path" in transforms:
        ply = transforms["ply_file_path"]
        copy_file(dataset.data_dir / ply, folder / relative_path(ply))
    (folder / "transforms.json").write_text(json_text(transforms))


def write_edited_view(frame: Dict[str, Any], image: Tensor, folder: Path) -> Dict[PurePosixPath, str]:
    """Write an edited view (uint8 [H, W, 3]) as its frame's image; returns {old path: new path} if it was renamed.

    Edits are stored losslessly: a JPG frame becomes a PNG of the same name, and its frame says so.
    """
    path = relative_path(frame["file_path"])
    renamed = {}
    if path.suffix.lower() != ".png":
        renamed[path] = frame["file_path"] = path.with_suffix(".png").as_posix()
        path = path.with_suffix(".png")
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.numpy()).save(folder / path)
    return renamed


def stored_file(data_dir: Path, file_path: str, factor: int, prefix: str) -> Path:
    """Where nerfstudio-data reads a frame's file at a downscale factor: `images_2/<name>` for an image at 2."""
    if factor > 1:
        return data_dir / f"{prefix}{factor}" / PurePosixPath(file_path).name
    return data_dir / file_path


def relative_path(file_path: str) -> PurePosixPath:
    """A transforms.json path as a path inside the export, which must not point outside it."""
    path = PurePosixPath(file_path)
    if path.is_absolute() or ".." in path.parts:
        raise In2nError(
            f"transforms.json names {file_path}, outside the dataset folder; exporting needs every frame's files "
            "inside it. Move them in and make the paths relative."
        )
    return path


def scaled_intrinsics(transforms: Dict[str, Any], scale: float) -> Dict[str, Any]:
    """A copy of transforms.json with the intrinsics of its images (top level and per frame) scaled by `scale`."""
    result = copy.deepcopy(transforms)
    if scale == 1.0:
        return result
    for entry in (result, *result["frames"]):
        for key in PIXEL_KEYS:
            if key in entry:
                entry[key] = float(entry[key]) * scale
        for key in SIZE_KEYS:
            if key in entry:
                entry[key] = int(int(entry[key]) * scale)
    return result


def copy_file(source: Path, destination: Path) -> None:
    if not source.is_file():
        raise In2nError(f"{source} is missing: transforms.json names it. Restore it, or export with --data pointing "
                        "at the dataset the run trained on.")  # fmt: skip
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)


def json_text(transforms: Dict[str, Any]) -> str:
    return json.dumps(transforms, indent=2) + "\n"


def check_output_dir(output_dir: Path, overwrite: bool, protected: List[Path]) -> None:
    """Refuse an output folder that is a file, holds files (without --overwrite), or holds the run or its data."""
    if output_dir.exists() and not output_dir.is_dir():
        raise In2nError(f"--output-dir {output_dir} is a file. Pass a folder to write the dataset to.")
    target = output_dir.resolve()
    for path in protected:
        if path.resolve() == target or target in path.resolve().parents:
            raise In2nError(
                f"--output-dir {output_dir} holds {path}, which the export reads. Write the dataset to another folder."
            )
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise In2nError(f"--output-dir {output_dir} is not empty. Choose a new folder, or replace it with "
                        "--overwrite True.")  # fmt: skip


def write_atomically(output_dir: Path, write: Callable[[Path], None]) -> None:
    """Call `write(folder)` on a fresh folder beside `output_dir`, then put it in place of `output_dir`.

    An interrupted export leaves at most a hidden `.partial` folder, never a half-written dataset.
    """
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    try:
        write(partial)
        if output_dir.exists():
            replaced = partial.with_name(partial.name + ".replaced")
            os.replace(output_dir, replaced)
            os.replace(partial, output_dir)
            shutil.rmtree(replaced)
        else:
            os.replace(partial, output_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def entrypoint() -> None:
    """Command-line entry point of ``in2n-export``."""
    tyro.cli(ExportEditedDataset).main()
