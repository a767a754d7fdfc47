"""`in2n-compare`: the original and the edited scene rendered along one camera path, side by side.

Each run is rendered by `ns-render camera-path` in its own process (which never loads the diffusion model), into a
folder of PNG frames; the frames are then put side by side, original left and edited right, into a video (ffmpeg)
and a still of the middle frame with labels. The output folder holds::

    before_after.mp4      every frame, original | edited
    before_after.png      the middle frame, labelled
    original/, edited/    the frames of each run (usable by in2n-eval)
    logs/                 the output of each ns-render
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import tyro
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image, ImageDraw, ImageFont
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from in2n.console import notice
from in2n.errors import In2nError
from in2n.runs.folder import RunFolder, read_run_folder
from in2n.synthetic.camera_path import SHIPPED_CAMERA_PATH

VIDEO_NAME = "before_after.mp4"
STILL_NAME = "before_after.png"
LOG_TAIL_LINES = 15
"""Lines of a failed command's output shown in the error."""
FRAME_TOLERANCE = 1e-4
"""Largest difference between two dataparser transforms that still counts as the same frame."""


@dataclass
class CompareConfig:
    """Render the original and the edited run along the same camera path and put them side by side (original left,
    edited right): a video and a labelled still of the middle frame. Rendering never loads the diffusion model."""

    original: Path
    """config.yml of the run the edit started from (usually nerfacto), or its run folder."""
    edited: Path
    """config.yml of the in2n run, or its run folder."""
    camera_path: Path = SHIPPED_CAMERA_PATH
    """Camera path file, as the viewer's Render tab exports it for `ns-render camera-path` (default: the orbit made
    for the built-in procedural scene, see `in2n-make-scene`)."""
    output_dir: Path = Path("renders/before_after")
    """Folder for the video, the still and the frames; its original/ and edited/ frame folders are replaced."""
    render_width: Optional[int] = None
    """Render each side this many pixels wide (the height follows the path's aspect ratio); default: the camera
    path's own render size. The field of view is kept, so a larger width shows the same views in more detail."""


@dataclass
class Run:
    """A training run as ns-render will load it."""

    option: str
    """The command-line option that named it, for messages."""
    config_file: Path
    """Its config.yml."""
    launch_dir: Path
    """The folder ns-train ran in; relative paths in config.yml (output and data folders) are relative to it."""


@dataclass
class CameraPath:
    """What the comparison needs from a camera path file."""

    file: Path
    """The file, as ns-render reads it."""
    num_frames: int
    """Cameras along the path, one frame each."""
    fps: float
    """Frame rate of the video, as ns-render computes it."""
    frame: Optional[Dict[str, Any]]
    """The dataparser transform the path was made for, if the file records it (see in2n.synthetic.camera_path)."""


@dataclass
class Comparison:
    """The files in2n-compare wrote."""

    video: Path
    """The frames side by side, original left."""
    still: Path
    """The middle frame side by side, labelled."""
    original_frames: Path
    """The folder of the original run's frames."""
    edited_frames: Path
    """The folder of the edited run's frames."""


def _check_kind(run: RunFolder, edited: bool) -> None:
    """--edited must be an in2n run and --original must not: swapped options are the likely mistake."""
    if edited and not run.is_edit:
        raise In2nError(
            f"--edited {run.config_file} is a {run.config.method_name} run, not an in2n run. Pass the config.yml of "
            "the `ns-train in2n` run as --edited and the run it edited as --original."
        )
    if not edited and run.is_edit:
        raise In2nError(
            f"--original {run.config_file} is an in2n run. Pass the run the edit started from (the one given to "
            "`ns-train in2n --load-dir`) as --original and the in2n run as --edited."
        )


def _launch_dir(config: TrainerConfig, config_file: Path, option: str) -> Path:
    """The folder ns-train ran in, found from where config.yml is now and where the run said it writes."""
    run_dir = config_file.resolve().parent
    base_dir = config.get_base_dir()
    depth = len(base_dir.parts)
    launch_dir: Optional[Path]
    if base_dir.is_absolute():
        launch_dir = Path.cwd()
    elif run_dir.parts[-depth:] == base_dir.parts:
        launch_dir = run_dir.parents[depth - 1]
    else:
        launch_dir = None
    if launch_dir is None or (launch_dir / base_dir).resolve() != run_dir:
        raise In2nError(
            f"{option} {config_file}: the run wrote its files to {base_dir}, but its config.yml is now in {run_dir}, "
            "and ns-render looks for the checkpoints where the run wrote them. Move the run folder back, or set "
            "output_dir in config.yml to the folder that now holds <experiment>/<method>/<timestamp>."
        )
    return launch_dir


def read_run(path: Path, option: str, edited: bool) -> Run:
    """The run an option names, checked: a readable config.yml of the right kind, with a checkpoint."""
    run = read_run_folder(path, option)
    _check_kind(run, edited)
    run.require_checkpoint(option, "render")
    return Run(option, run.config_file.resolve(), _launch_dir(run.config, run.config_file, option))


def read_camera_path(path: Path) -> CameraPath:
    """The camera path file, checked by loading it as ns-render does."""
    if not path.is_file():
        raise In2nError(
            f"--camera-path {path} does not exist. Pass a camera path file exported from the viewer's Render tab "
            f"(or the orbit for the built-in scene, {SHIPPED_CAMERA_PATH})."
        )
    try:
        content = json.loads(path.read_text())
        cameras = get_path_from_json(content)
        seconds = float(content["seconds"])
    except Exception as error:  # JSON, missing keys and wrong shapes all mean "not a camera path file"
        raise In2nError(
            f"--camera-path {path} is not a camera path file that ns-render reads ({type(error).__name__}: "
            f"{error}). Export one from the viewer's Render tab, or see {SHIPPED_CAMERA_PATH} for the format."
        ) from None
    if seconds <= 0:
        raise In2nError(f"--camera-path {path}: 'seconds' is {seconds}; the video needs a positive length.")
    return CameraPath(path.resolve(), len(cameras), len(cameras) / seconds, content.get("dataparser_transforms"))


def resized_camera_path(camera_path: CameraPath, width: int, output: Path) -> CameraPath:
    """A copy of the camera path rendering `width` pixels wide, the height keeping the aspect ratio."""
    if width < 16:
        raise In2nError(f"--render-width {width}: give at least 16 pixels.")
    content = json.loads(camera_path.file.read_text())
    aspect = content["render_width"] / content["render_height"]
    content["render_width"], content["render_height"] = width, max(1, round(width / aspect))
    output.write_text(json.dumps(content, indent=1))
    return dataclasses.replace(camera_path, file=output.resolve())


def _read_frame(run: Run) -> Optional[Dict[str, Any]]:
    transforms = run.config_file.parent / "dataparser_transforms.json"
    return json.loads(transforms.read_text()) if transforms.is_file() else None


def _same_frame(first: Dict[str, Any], second: Dict[str, Any]) -> bool:
    return math.isclose(first["scale"], second["scale"], abs_tol=FRAME_TOLERANCE) and np.allclose(
        first["transform"], second["transform"], atol=FRAME_TOLERANCE
    )


def check_frames(original: Run, edited: Run, camera_path: CameraPath) -> None:
    """The runs must share a frame for the path to show the same views; a path made for another frame is suspect."""
    original_frame, edited_frame = _read_frame(original), _read_frame(edited)
    if original_frame is not None and edited_frame is not None and not _same_frame(original_frame, edited_frame):
        raise In2nError(
            f"--original {original.config_file} and --edited {edited.config_file} were trained on datasets with "
            "different cameras (their dataparser_transforms.json differ), so one camera path would show different "
            "views of them. Pass the in2n run and the run it edited (its --load-dir)."
        )
    path_frame = camera_path.frame
    if path_frame is not None and original_frame is not None and not _same_frame(path_frame, original_frame):
        notice(
            f"the camera path {camera_path.file} was made for a dataset whose cameras differ from this one's, so it "
            "may not look at the scene. If the frames show nothing useful, export a path from the viewer's Render tab."
        )


def _ns_render() -> str:
    """ns-render of the environment this command runs in."""
    beside = Path(sys.executable).parent / "ns-render"
    return str(beside) if beside.is_file() else shutil.which("ns-render") or "ns-render"


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def render_frames(run: Run, camera_path: CameraPath, frames_dir: Path, log: Path, label: str) -> List[Path]:
    """Renders the run along the camera path into frames_dir/00000.png, ..., showing the frames written so far."""
    shutil.rmtree(frames_dir, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        _ns_render(), "camera-path", "--load-config", run.config_file, "--camera-path-filename", camera_path.file,
        "--output-path", frames_dir.resolve(), "--output-format", "images", "--image-format", "png",
        "--rendered-output-names", "rgb",
    ]  # fmt: skip
    started = time.perf_counter()
    progress = Progress(
        TextColumn(f"Rendering the {label} run"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=CONSOLE,
    )  # fmt: skip
    with log.open("w") as output, progress:
        task = progress.add_task(label, total=camera_path.num_frames)
        process = subprocess.Popen(
            [str(part) for part in command], cwd=run.launch_dir, stdout=output, stderr=subprocess.STDOUT
        )
        while process.poll() is None:
            progress.update(task, completed=len(list(frames_dir.glob("*.png"))))
            time.sleep(0.5)
        progress.update(task, completed=len(list(frames_dir.glob("*.png"))))
    if process.returncode != 0:
        raise In2nError(
            f"ns-render failed on {run.option} {run.config_file} (exit code {process.returncode}). The end of its "
            f"output (all of it is in {log}):\n{_tail(log)}"
        )
    frames = sorted(frames_dir.glob("*.png"))
    if len(frames) != camera_path.num_frames:
        raise In2nError(
            f"ns-render wrote {len(frames)} frames of {run.option} into {frames_dir}, but the camera path has "
            f"{camera_path.num_frames} cameras. Its output is in {log}."
        )
    CONSOLE.print(f"Rendered {len(frames)} frames of the {label} run in {time.perf_counter() - started:.0f} s")
    return frames


def write_video(original_dir: Path, edited_dir: Path, fps: float, video: Path) -> Path:
    """The two frame sequences side by side as an H.264 video (sizes padded to even, which yuv420p needs)."""
    command = [
        "ffmpeg", "-y", "-loglevel", "error",
        "-framerate", str(fps), "-i", original_dir / "%05d.png",
        "-framerate", str(fps), "-i", edited_dir / "%05d.png",
        "-filter_complex", "hstack=inputs=2,pad=ceil(iw/2)*2:ceil(ih/2)*2,format=yuv420p",
        "-c:v", "libx264", "-crf", "18", video,
    ]  # fmt: skip
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-LOG_TAIL_LINES:])
        raise In2nError(f"ffmpeg could not write {video} (exit code {result.returncode}):\n{tail}")
    return video


def _label(draw: ImageDraw.ImageDraw, text: str, center_x: float, center_y: float, size: int) -> None:
    font = ImageFont.load_default(size=size)
    draw.text((center_x, center_y), text, fill=(255, 255, 255), font=font, anchor="mm")


def write_still(original: Path, edited: Path, still: Path) -> Path:
    """The two frames side by side under a strip with the labels 'original' and 'edited'."""
    left, right = Image.open(original).convert("RGB"), Image.open(edited).convert("RGB")
    width, height = left.size
    font_size = max(10, height // 8)
    strip = 2 * font_size
    image = Image.new("RGB", (2 * width, height + strip), (0, 0, 0))
    image.paste(left, (0, strip))
    image.paste(right, (width, strip))
    draw = ImageDraw.Draw(image)
    _label(draw, "original", width / 2, strip / 2, font_size)
    _label(draw, "edited", 1.5 * width, strip / 2, font_size)
    image.save(still)
    return still


def compare(config: CompareConfig) -> Comparison:
    """Checks every input, renders both runs and writes the video and the still."""
    if shutil.which("ffmpeg") is None:
        raise In2nError(
            "ffmpeg is not installed, and both ns-render and the before/after video need it. Install it (Debian and "
            "Ubuntu: `sudo apt install ffmpeg`; conda: `conda install -c conda-forge ffmpeg`) and run again."
        )
    original = read_run(config.original, "--original", edited=False)
    edited = read_run(config.edited, "--edited", edited=True)
    camera_path = read_camera_path(config.camera_path)
    check_frames(original, edited, camera_path)
    output = config.output_dir
    output.mkdir(parents=True, exist_ok=True)
    if config.render_width is not None:
        camera_path = resized_camera_path(camera_path, config.render_width, output / "camera_path.json")
    frames = {
        label: render_frames(run, camera_path, output / label, output / "logs" / f"render-{label}.log", label)
        for label, run in (("original", original), ("edited", edited))
    }
    video = write_video(output / "original", output / "edited", camera_path.fps, output / VIDEO_NAME)
    middle = camera_path.num_frames // 2
    still = write_still(frames["original"][middle], frames["edited"][middle], output / STILL_NAME)
    return Comparison(video, still, output / "original", output / "edited")


def entrypoint() -> None:
    """Command-line entry point of ``in2n-compare``."""
    comparison = compare(tyro.cli(CompareConfig))
    CONSOLE.print(f"Before/after video (original left, edited right): {comparison.video}")
    CONSOLE.print(f"Before/after still (middle frame): {comparison.still}")
    CONSOLE.print(f"Frames of each run: {comparison.original_frames}, {comparison.edited_frames}")
