"""An orbit around the procedural scene, as a camera path file for ``ns-render camera-path``.

``ns-render camera-path`` hands the file's ``camera_to_world`` matrices to the model unchanged, so they must be in the
model's frame: the dataset's frame after the dataparser has oriented, centred and scaled the cameras (the transform
every run saves in its ``dataparser_transforms.json``; the viewer exports its camera paths in this frame too). That
transform depends on the dataset's cameras, so the orbit is laid out in the scene's world frame, around the objects,
and mapped through the transform the dataparser computes for the scene. The file keeps that transform under
``dataparser_transforms`` (ns-render ignores the key), so ``in2n-compare`` can tell when a run's frame is another one.

The shipped path ``synthetic_orbit.json`` beside this module (package data) is made for ``ORBIT_SCENE``, the scene of
the demo and the tests; the tests check that it is in sync with this module. Regenerate it with

    python -m in2n.synthetic.camera_path
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict

import numpy as np
import tyro
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE

from in2n.synthetic.scene import SceneConfig, focal_length, look_at_origin, sphere_points, write_scene

ORBIT_SCENE = SceneConfig(num_views=20, width=64, height=48, seed=0)
"""The scene the shipped camera path is made for (its frame depends on the scene's cameras)."""
SHIPPED_CAMERA_PATH = Path(__file__).resolve().parent / "synthetic_orbit.json"
"""The orbit around ORBIT_SCENE that the repository ships."""
DECIMALS = 6
"""Numbers in the file are rounded to this many decimals, so regenerating it on another machine gives the same file."""


@dataclass
class OrbitConfig:
    """A circle of cameras around the scene, all looking at the centre of the ground disc."""

    num_frames: int = 48
    """Number of cameras along the circle, one video frame each (each costs the demo about 3 s per run on 2 CPU
    cores at 256 px wide)."""
    seconds: float = 4.0
    """Length of the video; ns-render plays the frames at num_frames / seconds per second."""
    elevation_degrees: float = 30.0
    """Height of the circle, as the angle above the ground seen from the centre (the training views span 15-60)."""
    radius: float = 3.0
    """Distance of the cameras from the centre, in scene units (the training cameras are at SceneConfig.radius)."""
    resolution_scale: int = 2
    """Rendered size relative to the scene's images, at the same field of view."""


def orbit_poses(orbit: OrbitConfig) -> np.ndarray:
    """Camera-to-world matrices (N, 4, 4) of the orbit in the scene's world frame, starting at azimuth 0."""
    azimuths = 2.0 * np.pi * np.arange(orbit.num_frames) / orbit.num_frames
    elevations = np.full(orbit.num_frames, np.radians(orbit.elevation_degrees))
    return np.stack([look_at_origin(position) for position in sphere_points(orbit.radius, azimuths, elevations)])


def dataparser_frame(data: Path) -> Dict[str, Any]:
    """The transform nerfstudio's dataparser applies to a dataset's cameras, as runs save it in
    dataparser_transforms.json: ``{"transform": 3x4 rows, "scale": float}``."""
    outputs = NerfstudioDataParserConfig(data=data).setup().get_dataparser_outputs(split="train")
    return {"transform": outputs.dataparser_transform.tolist(), "scale": float(outputs.dataparser_scale)}


def to_model_frame(poses: np.ndarray, frame: Dict[str, Any]) -> np.ndarray:
    """Camera-to-world matrices (N, 4, 4) mapped from the dataset's frame into the model's, as the dataparser maps the
    training cameras: rotated and translated by the transform, then the translation scaled."""
    mapped = np.array(frame["transform"]) @ poses
    mapped[:, :, 3] *= frame["scale"]
    bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(poses), 1, 4))
    return np.concatenate([mapped, bottom], axis=1)


def vertical_fov_degrees(scene: SceneConfig) -> float:
    """The field of view ns-render expects (vertical, in degrees) for the scene's intrinsics."""
    return float(np.degrees(2.0 * np.arctan(0.5 * scene.height / focal_length(scene))))


def camera_path(scene: SceneConfig, orbit: OrbitConfig, frame: Dict[str, Any]) -> Dict[str, Any]:
    """The camera path file's content: the orbit in the model frame given by ``frame`` (see dataparser_frame)."""
    width, height = scene.width * orbit.resolution_scale, scene.height * orbit.resolution_scale
    fov = round(vertical_fov_degrees(scene), DECIMALS)
    poses = np.round(to_model_frame(orbit_poses(orbit), frame), DECIMALS)
    return {
        "camera_type": "perspective",
        "render_width": width,
        "render_height": height,
        "seconds": orbit.seconds,
        "fps": orbit.num_frames / orbit.seconds,
        "camera_path": [
            {"camera_to_world": pose.flatten().tolist(), "fov": fov, "aspect": width / height} for pose in poses
        ],
        "dataparser_transforms": {
            "transform": np.round(frame["transform"], DECIMALS).tolist(),
            "scale": round(frame["scale"], DECIMALS),
        },
    }


def _to_json(content: Dict[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line, so that a matrix reads as one line and diffs stay small."""
    text = json.dumps(content, indent=1)
    return re.sub(r"\[\s+([^\[\]]*?)\s+\]", lambda match: "[" + " ".join(match.group(1).split()) + "]", text) + "\n"


def write_orbit_camera_path(output: Path, scene: SceneConfig, orbit: OrbitConfig) -> Path:
    """Writes the orbit camera path for the scene to output (the scene is generated in a temporary folder to find its
    frame) and returns output."""
    with tempfile.TemporaryDirectory() as folder:
        write_scene(Path(folder), scene)
        frame = dataparser_frame(Path(folder))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(_to_json(camera_path(scene, orbit, frame)))
    return output


@dataclass
class MakeOrbitCameraPath(OrbitConfig):
    """Write an orbit camera path around the procedural scene for `ns-render camera-path`."""

    output: Path = SHIPPED_CAMERA_PATH
    """The camera path file to write."""
    scene: SceneConfig = field(default_factory=lambda: replace(ORBIT_SCENE))
    """The scene the path is for; its cameras decide the frame the path is written in."""


def main() -> None:
    config = tyro.cli(MakeOrbitCameraPath)
    output = write_orbit_camera_path(config.output, config.scene, config)
    CONSOLE.print(f"Wrote an orbit of {config.num_frames} cameras to {output}")


if __name__ == "__main__":
    main()
