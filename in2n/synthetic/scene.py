"""Procedural multi-view scene with known cameras, written as a nerfstudio dataset.

The scene (three spheres and a box standing on a checkered disc under a sky gradient) is ray cast analytically in
numpy, so tests, demos and benchmarks get a real 3D dataset with exact poses and no external renderer or download.
The world is Z-up and the cameras follow nerfstudio's OpenGL convention (looking down -Z, +Y up).
"""

from __future__ import annotations

import colorsys
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, List, Optional, Tuple

import numpy as np
import tyro
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from in2n.process import prepare_process

_WORLD_UP = np.array([0.0, 0.0, 1.0])
_LIGHT_DIRECTION = np.array([0.4, 0.3, 1.0]) / np.linalg.norm([0.4, 0.3, 1.0])
_AMBIENT = 0.25
_SHININESS = 40.0
_SKY_HORIZON = np.array([0.92, 0.85, 0.72])
_SKY_ZENITH = np.array([0.30, 0.50, 0.85])
_MIN_DISTANCE = 1e-4
"""Hits closer than this are ignored so rays leaving a surface do not hit it again through rounding."""
_SHADOW_OFFSET = 1e-3


@dataclass
class SceneConfig:
    """Layout, cameras and image format of a procedural scene."""

    num_views: int = 24
    """Number of cameras, one image each."""
    width: int = 64
    """Image width in pixels."""
    height: int = 48
    """Image height in pixels."""
    seed: int = 0
    """Seed of the object sizes, colours and placement and of the camera azimuths and elevations."""
    radius: float = 3.0
    """Distance of every camera centre from the origin, which all cameras look at."""
    fov_degrees: float = 50.0
    """Horizontal field of view of the shared pinhole intrinsics."""
    min_elevation_degrees: float = 15.0
    """Lowest camera elevation above the ground plane."""
    max_elevation_degrees: float = 60.0
    """Highest camera elevation above the ground plane (below 90 so the camera's up vector is defined)."""
    supersample: int = 2
    """Rays per pixel along each image axis; averaging them anti-aliases edges, which a NeRF fits more easily."""
    rgba: bool = False
    """Write RGBA images with alpha 255 where the objects or the ground are hit and 0 on the sky (fractional alpha
    only on anti-aliased edges)."""
    mask_object: Optional[int] = None
    """Also write a mask per view of this object (0 to 2: the spheres, 3: the box), white where it is seen, named as
    each frame's mask_path (see object_bounds for where it stands)."""
    depth: bool = False
    """Also write each view's depth (along the camera's axis, in millimetres, 16-bit PNG, 0 on the sky) as each frame's
    depth_file_path, the layout depth-nerfacto trains on (with `--pipeline.model.depth-loss-mult 0.05`, the scene's
    geometry within a few hundred steps)."""
    points: int = 0
    """Also write a point cloud of this many coloured points on what the cameras see, as sparse_pc.ply named by
    transforms.json's ply_file_path: the structure-from-motion points splatfacto starts its Gaussians from (the sky on
    a sphere of radius SKY_RADIUS about the origin). 0: none, and splatfacto starts from random Gaussians."""


SKY_RADIUS = 8.0
"""Distance from the origin at which the point cloud places the sky (the cameras are config.radius from it)."""
POINT_CLOUD_NAME = "sparse_pc.ply"
"""The point cloud's file, under the name ns-process-data gives it."""


class _Primitive(ABC):
    """A shape that rays can hit."""

    specular: ClassVar[float]
    """Strength of the Blinn-Phong highlight, which makes the appearance view dependent."""

    @abstractmethod
    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Distance along each unit-length ray to its first hit in front of the origin, inf where it misses."""

    @abstractmethod
    def surface(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Unit normals and albedos at points on the surface."""


@dataclass
class _Sphere(_Primitive):
    """A shiny sphere."""

    center: np.ndarray
    radius: float
    albedo: np.ndarray
    specular: ClassVar[float] = 0.6

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        offsets = origins - self.center
        half_b = np.einsum("ij,ij->i", offsets, directions)
        discriminant = half_b**2 - np.einsum("ij,ij->i", offsets, offsets) + self.radius**2
        distance = -half_b - np.sqrt(np.maximum(discriminant, 0.0))
        return np.where((discriminant >= 0.0) & (distance > _MIN_DISTANCE), distance, np.inf)

    def surface(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return (points - self.center) / self.radius, np.broadcast_to(self.albedo, points.shape)


@dataclass
class _Box(_Primitive):
    """A box standing upright, turned about the world up axis."""

    center: np.ndarray
    half_size: np.ndarray
    yaw: float
    """Rotation about the world up axis, in radians."""
    albedo: np.ndarray
    specular: ClassVar[float] = 0.2

    @property
    def _box_to_world(self) -> np.ndarray:
        """Rotation from the box frame, where the box is axis aligned, to the world (world row vectors times it are in
        the box frame)."""
        cos, sin = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        rotation = self._box_to_world
        local_origins = (origins - self.center) @ rotation
        # Axis-parallel rays divide by zero; the resulting infinities (and NaNs on a slab boundary) count as misses.
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = 1.0 / (directions @ rotation)
            to_low = (-self.half_size - local_origins) * inverse
            to_high = (self.half_size - local_origins) * inverse
            near = np.minimum(to_low, to_high).max(axis=1)
            far = np.maximum(to_low, to_high).min(axis=1)
            return np.where((near <= far) & (near > _MIN_DISTANCE), near, np.inf)

    def surface(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        rotation = self._box_to_world
        local = (points - self.center) @ rotation / self.half_size
        rows = np.arange(len(points))
        face_axis = np.abs(local).argmax(axis=1)
        local_normals = np.zeros_like(local)
        local_normals[rows, face_axis] = np.sign(local[rows, face_axis])
        return local_normals @ rotation.T, np.broadcast_to(self.albedo, points.shape)


@dataclass
class _CheckeredDisc(_Primitive):
    """The ground: a disc in the z = 0 plane, finite so the sky shows around it and gives the RGBA images holes."""

    radius: float
    tile_size: float
    albedos: Tuple[np.ndarray, np.ndarray]
    specular: ClassVar[float] = 0.0

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        # Rays parallel to the plane give inf or NaN distances, which the comparisons below reject.
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = -origins[:, 2] / directions[:, 2]
            points = origins[:, :2] + distance[:, None] * directions[:, :2]
            inside = (distance > _MIN_DISTANCE) & (np.einsum("ij,ij->i", points, points) <= self.radius**2)
        return np.where(inside, distance, np.inf)

    def surface(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        tiles = np.floor(points[:, :2] / self.tile_size).sum(axis=1)
        albedo = np.where((tiles % 2 == 0)[:, None], self.albedos[0], self.albedos[1])
        return np.broadcast_to(_WORLD_UP, points.shape), albedo


def _make_primitives(rng: np.random.Generator) -> List[_Primitive]:
    """Three spheres on a ring around a box, all standing on the ground, with colours spread around the hue wheel."""
    first_hue = rng.uniform()
    ring_phase = rng.uniform(0.0, 2.0 * np.pi)
    primitives: List[_Primitive] = [
        _CheckeredDisc(radius=1.3, tile_size=0.25, albedos=(np.array([0.85, 0.85, 0.8]), np.array([0.3, 0.3, 0.35])))
    ]
    for index in range(3):
        angle = ring_phase + 2.0 * np.pi * index / 3
        radius = rng.uniform(0.2, 0.35)
        albedo = np.array(colorsys.hsv_to_rgb((first_hue + index / 4) % 1.0, 0.75, 0.9))
        primitives.append(_Sphere(np.array([0.75 * np.cos(angle), 0.75 * np.sin(angle), radius]), radius, albedo))
    primitives.append(
        _Box(
            center=np.array([0.0, 0.0, 0.35]),
            half_size=np.array([0.18, 0.18, 0.35]),
            yaw=rng.uniform(0.0, 0.5 * np.pi),
            albedo=np.array(colorsys.hsv_to_rgb((first_hue + 0.75) % 1.0, 0.6, 0.9)),
        )
    )
    return primitives


def _first_hits(
    primitives: List[_Primitive], origins: np.ndarray, directions: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Distance to, and index of, the nearest primitive along each ray (inf distance on a miss)."""
    distances = np.stack([primitive.intersect(origins, directions) for primitive in primitives])
    return distances.min(axis=0), distances.argmin(axis=0)


def _shade(primitives: List[_Primitive], origins: np.ndarray, directions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Colour in [0, 1] and hit mask of each ray, with Lambertian and specular terms and hard shadows."""
    distance, index = _first_hits(primitives, origins, directions)
    hit = np.isfinite(distance)
    # Spread the gradient over the directions the cameras actually see, which are mostly near or below the horizon.
    sky_height = np.clip(directions[:, 2:] + 0.5, 0.0, 1.0)
    rgb = (1.0 - sky_height) * _SKY_HORIZON + sky_height * _SKY_ZENITH

    points = origins[hit] + distance[hit, None] * directions[hit]
    normals = np.empty_like(points)
    albedos = np.empty_like(points)
    speculars = np.empty(len(points))
    for primitive_index, primitive in enumerate(primitives):
        mask = index[hit] == primitive_index
        normals[mask], albedos[mask] = primitive.surface(points[mask])
        speculars[mask] = primitive.specular

    shadow_origins = points + _SHADOW_OFFSET * normals
    shadow_directions = np.broadcast_to(_LIGHT_DIRECTION, points.shape)
    lit = ~np.isfinite(_first_hits(primitives, shadow_origins, shadow_directions)[0])
    diffuse = np.clip(normals @ _LIGHT_DIRECTION, 0.0, None) * lit
    halfway = _LIGHT_DIRECTION - directions[hit]
    halfway /= np.linalg.norm(halfway, axis=1, keepdims=True)
    highlight = speculars * np.clip(np.einsum("ij,ij->i", normals, halfway), 0.0, None) ** _SHININESS * lit
    rgb[hit] = albedos * (_AMBIENT + (1.0 - _AMBIENT) * diffuse[:, None]) + highlight[:, None]
    return np.clip(rgb, 0.0, 1.0), hit


def sphere_points(radius: float, azimuths: np.ndarray, elevations: np.ndarray) -> np.ndarray:
    """Points (N, 3) on the sphere of the given radius about the origin; angles in radians, elevation above z = 0."""
    return radius * np.stack(
        [np.cos(elevations) * np.cos(azimuths), np.cos(elevations) * np.sin(azimuths), np.sin(elevations)], axis=1
    )


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """Camera-to-world matrix of a camera at position looking at the origin with the world up axis pointing up."""
    backward = position / np.linalg.norm(position)
    right = np.cross(_WORLD_UP, backward)
    right /= np.linalg.norm(right)
    camera_to_world = np.eye(4)
    camera_to_world[:3, :3] = np.stack([right, np.cross(backward, right), backward], axis=1)
    camera_to_world[:3, 3] = position
    return camera_to_world


def _camera_poses(config: SceneConfig, rng: np.random.Generator) -> List[np.ndarray]:
    """Cameras evenly spread in azimuth, at random elevations, on the sphere of radius config.radius."""
    azimuths = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * np.arange(config.num_views) / config.num_views
    elevations = np.radians(
        rng.uniform(config.min_elevation_degrees, config.max_elevation_degrees, size=config.num_views)
    )
    return [look_at_origin(position) for position in sphere_points(config.radius, azimuths, elevations)]


def focal_length(config: SceneConfig) -> float:
    """Focal length in pixels of the shared pinhole intrinsics."""
    return 0.5 * config.width / np.tan(0.5 * np.radians(config.fov_degrees))


def _camera_rays(camera_to_world: np.ndarray, focal: float, config: SceneConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Origins and unit directions (N, 3) of the supersampled rays of one image, row by row."""
    samples = config.supersample
    # Sample positions in pixel units of the output image, centred like nerfstudio's rays (pixel offset 0.5).
    columns, rows = np.meshgrid(
        (np.arange(config.width * samples) + 0.5) / samples, (np.arange(config.height * samples) + 0.5) / samples
    )
    camera_directions = np.stack(
        [(columns - config.width / 2) / focal, (config.height / 2 - rows) / focal, -np.ones_like(columns)], axis=-1
    ).reshape(-1, 3)
    directions = camera_directions @ camera_to_world[:3, :3].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return np.broadcast_to(camera_to_world[:3, 3], directions.shape), directions


def _downsample(values: np.ndarray, config: SceneConfig) -> np.ndarray:
    """Supersampled per-ray values (N, C) averaged into pixels, uint8 of shape (height, width, C)."""
    samples = config.supersample
    image = values.reshape(config.height, samples, config.width, samples, -1)
    return np.round(image.mean(axis=(1, 3)) * 255.0).astype(np.uint8)


def _render(primitives: List[_Primitive], camera_to_world: np.ndarray, focal: float, config: SceneConfig) -> np.ndarray:
    """One uint8 image of shape (height, width, 3 or 4)."""
    rgb, hit = _shade(primitives, *_camera_rays(camera_to_world, focal, config))
    return _downsample(np.concatenate([rgb, hit[:, None]], axis=1) if config.rgba else rgb, config)


def _object_mask(
    primitives: List[_Primitive], camera_to_world: np.ndarray, focal: float, config: SceneConfig, index: int
) -> np.ndarray:
    """uint8 (height, width): 255 where object `index` is what the pixel sees (most of its rays), 0 elsewhere."""
    distance, nearest = _first_hits(primitives, *_camera_rays(camera_to_world, focal, config))
    seen = (np.isfinite(distance) & (nearest == index + 1)).astype(np.float64)  # primitive 0 is the ground
    return np.where(_downsample(seen[:, None], config)[..., 0] >= 128, 255, 0).astype(np.uint8)


def surface_points(config: SceneConfig, camera_to_world: np.ndarray) -> np.ndarray:
    """The world point each pixel's centre sees, (height, width, 3); inf where it sees the sky."""
    single = replace(config, supersample=1)
    origins, directions = _camera_rays(camera_to_world, focal_length(single), single)
    distance, _ = _first_hits(_make_primitives(np.random.default_rng(config.seed)), origins, directions)
    with np.errstate(invalid="ignore"):  # inf x 0 for the sky: NaN, made inf below
        points = origins + distance[:, None] * directions
    points[~np.isfinite(distance)] = np.inf
    return points.reshape(config.height, config.width, 3)


def z_depth(config: SceneConfig, camera_to_world: np.ndarray) -> np.ndarray:
    """Each pixel's depth along the camera's viewing axis (-Z), (height, width); 0 where it sees the sky."""
    offsets = surface_points(config, camera_to_world) - camera_to_world[:3, 3]
    with np.errstate(invalid="ignore"):  # inf x 0 for the sky
        depth = -(offsets @ camera_to_world[:3, 2])
    return np.where(np.isfinite(depth), depth, 0.0)


def object_bounds(config: SceneConfig, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """The world-space axis-aligned bounds (low, high corner) of object `index` (0 to 2: the spheres, 3: the box)."""
    primitive = _make_primitives(np.random.default_rng(config.seed))[index + 1]
    if isinstance(primitive, _Sphere):
        return primitive.center - primitive.radius, primitive.center + primitive.radius
    assert isinstance(primitive, _Box)
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=float)
    corners = primitive.center + (signs * primitive.half_size) @ primitive._box_to_world.T
    return corners.min(axis=0), corners.max(axis=0)


def render_view(config: SceneConfig, camera_to_world: np.ndarray) -> np.ndarray:
    """The scene seen from any camera (world frame, OpenGL convention) with the intrinsics of config: the exact image
    a novel-view render should reproduce, uint8 of shape (height, width, 3 or 4)."""
    return _render(_make_primitives(np.random.default_rng(config.seed)), camera_to_world, focal_length(config), config)


def point_cloud(config: SceneConfig, poses: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """`config.points` points (N, 3) and their uint8 colours (N, 3), drawn from the pixels of every view: where a
    pixel sees a surface, its surface point; where it sees the sky, its ray's point on the sphere of radius
    SKY_RADIUS."""
    single = replace(config, supersample=1)
    primitives = _make_primitives(np.random.default_rng(config.seed))
    focal = focal_length(single)
    points, colours = [], []
    for camera_to_world in poses:
        origins, directions = _camera_rays(camera_to_world, focal, single)
        rgb, _ = _shade(primitives, origins, directions)
        distance, _ = _first_hits(primitives, origins, directions)
        # The far intersection of each ray with the sky sphere (the cameras are inside it).
        half_b = np.einsum("ij,ij->i", origins, directions)
        sky = -half_b + np.sqrt(half_b**2 - np.einsum("ij,ij->i", origins, origins) + SKY_RADIUS**2)
        points.append(origins + np.where(np.isfinite(distance), distance, sky)[:, None] * directions)
        colours.append(rgb)
    all_points, all_colours = np.concatenate(points), np.concatenate(colours)
    count = min(config.points, len(all_points))
    chosen = np.random.default_rng(config.seed).choice(len(all_points), size=count, replace=False)
    return all_points[chosen], np.round(all_colours[chosen] * 255.0).astype(np.uint8)


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray) -> None:
    """An ASCII PLY of coloured points, as open3d (nerfstudio's reader) reads it."""
    header = [
        "ply", "format ascii 1.0", f"element vertex {len(points)}", "property float x", "property float y",
        "property float z", "property uchar red", "property uchar green", "property uchar blue", "end_header",
    ]  # fmt: skip
    rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(points, colours, strict=True)]
    path.write_text("\n".join(header + rows) + "\n")


def write_scene(output_dir: Path, config: SceneConfig) -> Path:
    """Renders the scene and writes ``transforms.json`` and ``images/frame_XXXXX.png`` (and the masks, depths and point
    cloud the config asks for) into output_dir.

    Frames of an earlier scene in the same folder are removed first, so the folder holds exactly this scene.

    Args:
        output_dir: Dataset folder, created if missing.
        config: Scene, camera and image settings.

    Returns:
        Path of the written ``transforms.json``.
    """
    rng = np.random.default_rng(config.seed)
    primitives = _make_primitives(rng)
    poses = _camera_poses(config, rng)
    focal = focal_length(config)

    image_dir, mask_dir, depth_dir = output_dir / "images", output_dir / "masks", output_dir / "depth"
    image_dir.mkdir(parents=True, exist_ok=True)
    for stale_image in [*image_dir.glob("frame_*.png"), *mask_dir.glob("frame_*.png"), *depth_dir.glob("frame_*.png")]:
        stale_image.unlink()
    frames = []
    # Numbered from 1 like the frames of ns-process-data.
    for number, camera_to_world in enumerate(poses, start=1):
        file_path = f"images/frame_{number:05d}.png"
        Image.fromarray(_render(primitives, camera_to_world, focal, config)).save(output_dir / file_path)
        frame = {"file_path": file_path, "transform_matrix": camera_to_world.tolist()}
        if config.mask_object is not None:
            mask_dir.mkdir(exist_ok=True)
            frame["mask_path"] = f"masks/frame_{number:05d}.png"
            mask = _object_mask(primitives, camera_to_world, focal, config, config.mask_object)
            Image.fromarray(mask).save(output_dir / frame["mask_path"])
        if config.depth:
            depth_dir.mkdir(exist_ok=True)
            frame["depth_file_path"] = f"depth/frame_{number:05d}.png"
            millimetres = np.round(z_depth(config, camera_to_world) * 1000.0).astype(np.uint16)
            Image.fromarray(millimetres).save(output_dir / frame["depth_file_path"])
        frames.append(frame)

    transforms = {
        "camera_model": "OPENCV",
        "fl_x": focal,
        "fl_y": focal,
        "cx": config.width / 2,
        "cy": config.height / 2,
        "w": config.width,
        "h": config.height,
        "frames": frames,
    }
    (output_dir / POINT_CLOUD_NAME).unlink(missing_ok=True)
    if config.points > 0:
        write_ply(output_dir / POINT_CLOUD_NAME, *point_cloud(config, poses))
        transforms["ply_file_path"] = POINT_CLOUD_NAME
    transforms_path = output_dir / "transforms.json"
    transforms_path.write_text(json.dumps(transforms, indent=2))
    return transforms_path


@dataclass
class MakeSceneConfig(SceneConfig):
    """Write a procedural multi-view scene as a nerfstudio dataset (transforms.json + images/)."""

    output_dir: Path = Path("data/in2n-synthetic")
    """Dataset folder; an existing one is overwritten."""


def entrypoint() -> None:
    """Command-line entry point of ``in2n-make-scene``."""
    prepare_process()
    config = tyro.cli(MakeSceneConfig)
    transforms_path = write_scene(config.output_dir, config)
    CONSOLE.print(f"Wrote {config.num_views} views of {config.width}x{config.height} to {transforms_path}")
