"""The orbit shipped for the procedural scene: in sync with its generator, loaded by nerfstudio, aimed at the scene."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import pytest
from nerfstudio.cameras.camera_paths import get_path_from_json

from in2n.synthetic.camera_path import (
    ORBIT_SCENE,
    SHIPPED_CAMERA_PATH,
    OrbitConfig,
    dataparser_frame,
    write_orbit_camera_path,
)
from tests.conftest import SCENE


def leaves(content: Any, path: str = "") -> Iterator[Tuple[str, Any]]:
    """(path, value) of every number and string in nested JSON content."""
    if isinstance(content, dict):
        for key, value in content.items():
            yield from leaves(value, f"{path}/{key}")
    elif isinstance(content, list):
        for index, value in enumerate(content):
            yield from leaves(value, f"{path}/{index}")
    else:
        yield path, content


def model_frame_geometry(frame: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray, float]:
    """Where the scene's world origin and up axis are in the model frame, and the model length of one world unit."""
    transform = np.array(frame["transform"])
    return frame["scale"] * transform[:, 3], transform[:, 2], frame["scale"]


def test_the_tests_render_the_scene_the_path_is_made_for():
    # The fixtures' runs are trained on SCENE; the shipped path is in the frame of ORBIT_SCENE. The point cloud SCENE
    # adds for splatfacto moves no camera, and nerfstudio's dataparser orients and scales the frame by the cameras.
    assert replace(SCENE, points=ORBIT_SCENE.points) == ORBIT_SCENE


def test_shipped_camera_path_is_what_its_generator_writes(tmp_path: Path):
    regenerated = json.loads(write_orbit_camera_path(tmp_path / "orbit.json", ORBIT_SCENE, OrbitConfig()).read_text())
    shipped = dict(leaves(json.loads(SHIPPED_CAMERA_PATH.read_text())))
    expected = dict(leaves(regenerated))
    assert shipped.keys() == expected.keys(), "regenerate it: python -m in2n.synthetic.camera_path"
    for key, value in expected.items():
        assert shipped[key] == (pytest.approx(value, abs=2e-6) if isinstance(value, float) else value), key


def test_shipped_camera_path_orbits_the_scene_once_at_30_degrees(scene: Path):
    content = json.loads(SHIPPED_CAMERA_PATH.read_text())
    cameras = get_path_from_json(content)
    assert 36 <= len(cameras) <= 120, "at most 10 degrees between frames, and a video the demo renders in minutes"
    assert (int(cameras.width[0]), int(cameras.height[0])) == (128, 96)

    # The frame every run on the scene trains in, as nerfstudio's dataparser computes it from the dataset.
    frame = dataparser_frame(scene)
    recorded = content["dataparser_transforms"]
    assert recorded["scale"] == pytest.approx(frame["scale"], abs=1e-5)
    assert np.allclose(recorded["transform"], frame["transform"], atol=1e-5)
    centre, up, unit = model_frame_geometry(frame)
    camera_to_worlds = cameras.camera_to_worlds.double().numpy()
    positions, forwards = camera_to_worlds[:, :, 3], -camera_to_worlds[:, :, 2]
    offsets = positions - centre
    distances = np.linalg.norm(offsets, axis=1)
    aim_errors = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", forwards, -offsets) / distances, -1.0, 1.0)))
    assert aim_errors.max() < 0.1, "every camera looks at the centre of the scene"
    assert distances == pytest.approx(OrbitConfig().radius * unit, rel=1e-4)
    assert np.degrees(np.arcsin(offsets @ up / distances)) == pytest.approx(30.0, abs=0.05)
    # Camera up vectors lean the way the world's up axis points, so the ground is at the bottom of the frames.
    assert (camera_to_worlds[:, :, 1] @ up).min() > 0.8

    horizontal = offsets - np.outer(offsets @ up, up)
    horizontal /= np.linalg.norm(horizontal, axis=1, keepdims=True)
    following = np.roll(horizontal, -1, axis=0)
    steps = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", horizontal, following), -1.0, 1.0)))
    assert steps == pytest.approx(360.0 / len(cameras), abs=0.01), "evenly spaced, closing the loop"
    assert (np.cross(horizontal, following) @ up > 0).all(), "always the same way round"
