"""The CPU route of the splat rasterizer against gsplat's pure-torch reference and the rules of its CUDA kernel, and
the check for gsplat's CUDA kernels."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from typing import Dict, List

import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from in2n.splat import rasterizer
from in2n.splat.rasterizer import TILE_SIZE, rasterize, rasterize_in_torch, tile_lists

WIDTH, HEIGHT = 40, 24
"""Two and a half tiles by one and a half: partial tiles on both axes."""


def gaussians(count: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random Gaussians in front of the camera of `camera()`, with SH colours of degree 1."""
    generator = torch.Generator().manual_seed(seed)
    depth = 2.0 + 4.0 * torch.rand(count, 1, generator=generator)
    spread = torch.rand(count, 2, generator=generator) * 2.0 - 1.0
    return {
        "means": torch.cat([spread * depth * torch.tensor([0.7, 0.45]), depth], dim=1).double(),
        "quats": torch.randn(count, 4, generator=generator).double(),
        "scales": (0.03 + 0.25 * torch.rand(count, 3, generator=generator)).double(),
        "opacities": (0.2 + 0.75 * torch.rand(count, generator=generator)).double(),
        "colors": (0.4 * torch.randn(count, 4, 3, generator=generator)).double(),
    }


def camera() -> Dict[str, torch.Tensor]:
    """One pinhole camera at the origin looking down +z (gsplat's OpenCV axes), principal point off centre."""
    intrinsics = torch.tensor([[30.0, 0.0, 20.3], [0.0, 30.0, 12.7], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return {"viewmats": torch.eye(4, dtype=torch.float64)[None], "Ks": intrinsics[None]}


def reference_render(scene: Dict[str, torch.Tensor], width: int, height: int) -> torch.Tensor:
    """gsplat's pure-torch projection, tile lists (`_isect_tiles`) and spherical harmonics, composited pixel by pixel
    by the rules of gsplat's CUDA kernel (rasterize_to_pixels_fwd.cu): RGB [H, W, 3]."""
    cam = camera()
    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], True, False, triu=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        scene["means"], covars, cam["viewmats"], cam["Ks"], width, height
    )
    colors = torch.clamp_min(_spherical_harmonics(1, scene["means"][None], scene["colors"][None]) + 0.5, 0.0)[0]
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    per_tile = gsplat_tile_lists(means2d, radii, depths, tiles_x, tiles_y)
    image = torch.zeros(height, width, 3, dtype=torch.float64)
    for y in range(height):
        for x in range(width):
            transmittance = 1.0
            for g in per_tile.get((y // TILE_SIZE) * tiles_x + x // TILE_SIZE, []):
                a, b, c = conics[0, g].tolist()
                dx, dy = x + 0.5 - means2d[0, g, 0].item(), y + 0.5 - means2d[0, g, 1].item()
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, scene["opacities"][g].item() * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if transmittance * (1 - alpha) <= 1e-4:
                    break
                image[y, x] += alpha * transmittance * colors[g]
                transmittance *= 1 - alpha
    return image


def gsplat_tile_lists(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, tiles_x: int, tiles_y: int
) -> Dict[int, List[int]]:
    """Each tile's Gaussians, front to back, as gsplat's pure-torch `_isect_tiles` lists them (one camera)."""
    _, isect_ids, flatten_ids = _isect_tiles(means2d, radii, depths, TILE_SIZE, tiles_x, tiles_y)
    tile_bits = (tiles_x * tiles_y).bit_length()
    per_tile: Dict[int, List[int]] = {}
    for isect, flat in zip(isect_ids.tolist(), flatten_ids.tolist(), strict=True):
        per_tile.setdefault((isect >> 32) & ((1 << tile_bits) - 1), []).append(flat)
    return per_tile


def render(scene: Dict[str, torch.Tensor], **options):
    return rasterize_in_torch(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"], **camera(),
        width=options.pop("width", WIDTH), height=options.pop("height", HEIGHT), sh_degree=1, **options,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The CPU route sets torch to one thread; the rest of the test session keeps its own setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_cpu_route_renders_what_gsplats_reference_and_kernel_rules_give() -> None:
    scene = gaussians(40)
    colors, alphas, meta = render(scene)
    assert colors.shape == (1, HEIGHT, WIDTH, 3) and alphas.shape == (1, HEIGHT, WIDTH, 1)
    expected = reference_render(scene, WIDTH, HEIGHT)
    assert torch.allclose(colors[0], expected, atol=1e-6), (colors[0] - expected).abs().max()
    assert colors.std() > 0.05 and (alphas > 0.5).float().mean() > 0.2, "a scene, not a flat image"
    assert meta["radii"].shape == (1, 40) and meta["n_cameras"] == 1 and (meta["width"], meta["height"]) == (40, 24)


def test_each_tile_holds_the_gaussians_gsplat_puts_in_it_front_to_back() -> None:
    scene = gaussians(60, seed=3)
    cam = camera()
    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], True, False, triu=False)
    radii, means2d, depths, _, _ = _fully_fused_projection(scene["means"], covars, cam["viewmats"], cam["Ks"], 40, 24)
    theirs = gsplat_tile_lists(means2d, radii, depths, 3, 2)
    ours = {tile: members.tolist() for tile, members in tile_lists(means2d[0], radii[0], depths[0], 3, 2).items()}
    assert ours == theirs and sum(map(len, ours.values())) > 60


def test_a_gaussian_on_the_optical_axis_renders_at_the_principal_point_with_its_depth() -> None:
    scene = {
        "means": torch.tensor([[0.0, 0.0, 3.0]]),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        "scales": torch.full((1, 3), 0.1),
        "opacities": torch.tensor([0.99]),
        # Degree-0 SH: colour = 0.5 + 0.282 x coefficient, cut at 0 (red 1.06, green and blue 0).
        "colors": torch.tensor([[[2.0, -2.0, -2.0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]]),
    }
    scene = {k: v.double() for k, v in scene.items()}
    colors, alphas, _ = render(scene, render_mode="RGB+ED")
    peak = int(torch.argmax(alphas[0, ..., 0]))
    assert divmod(peak, WIDTH) == (12, 20), "the pixel holding the principal point (20.3, 12.7)"
    assert alphas.max() > 0.9 and alphas[0, 0, 0, 0] < 1e-3
    red, green = colors[0, 12, 20, 0], colors[0, 12, 20, 1]
    assert red > 0.9 and green < 0.1
    covered = alphas[0, ..., 0] > 0.5
    assert torch.allclose(colors[0, ..., 3][covered], torch.full_like(colors[0, ..., 3][covered], 3.0), atol=1e-6)


def test_gradients_reach_every_parameter_and_absgrad_sums_each_pixels_absolute_gradient() -> None:
    scene = {name: value.requires_grad_(True) for name, value in gaussians(6, seed=1).items()}
    colors, _, meta = render(scene, width=16, height=16)
    means2d = meta["means2d"]
    reference = torch.zeros_like(means2d)
    for y in range(16):
        for x in range(16):
            (grad,) = torch.autograd.grad(colors[0, y, x].sum(), means2d, retain_graph=True)
            reference += grad.abs()
    colors, _, meta = render(scene, width=16, height=16, absgrad=True)
    colors.sum().backward()
    assert torch.allclose(meta["means2d"].absgrad, reference, atol=1e-9)
    assert reference.abs().sum() > 0
    for name, value in scene.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, name


def test_rasterize_takes_the_torch_route_on_the_cpu_and_runs_it_on_one_thread() -> None:
    scene = {name: value.float() for name, value in gaussians(20).items()}
    torch.set_num_threads(2)
    ours = rasterize(
        scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["colors"],
        camera()["viewmats"].float(), camera()["Ks"].float(), WIDTH, HEIGHT, sh_degree=1,
    )  # fmt: skip
    assert torch.get_num_threads() == 1
    assert torch.allclose(ours[0].double(), reference_render(gaussians(20), WIDTH, HEIGHT)[None], atol=1e-4)


# ----------------------------------------------------------------------------------------------------------------
# gsplat's CUDA kernels.


@pytest.fixture
def no_kernels(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A machine with neither a prebuilt gsplat, nor kernels compiled earlier, nor a CUDA compiler."""
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gsplat.csrc" else object())
    monkeypatch.delitem(sys.modules, "gsplat.cuda._backend", raising=False)
    monkeypatch.setattr(rasterizer, "jit_build_folder", lambda: tmp_path)
    monkeypatch.setattr(shutil, "which", lambda command: None)
    return monkeypatch


def test_without_gsplat_kernels_the_problem_says_what_to_install(no_kernels) -> None:
    problem = rasterizer.cuda_kernels_problem()
    assert problem is not None
    assert "no prebuilt gsplat and no CUDA compiler (nvcc)" in problem
    assert "pip install gsplat==1.4.0 --index-url https://docs.gsplat.studio/whl/pt" in problem
    assert "--machine.device-type cpu" in problem


def test_gsplat_kernels_that_are_built_or_can_be_built_are_no_problem(no_kernels, tmp_path) -> None:
    no_kernels.setattr(shutil, "which", lambda command: "/usr/local/cuda/bin/nvcc" if command == "nvcc" else None)
    assert rasterizer.cuda_kernels_problem() is None, "gsplat compiles them on first use"
    no_kernels.setattr(shutil, "which", lambda command: None)
    (tmp_path / "gsplat_cuda.so").write_bytes(b"")
    assert rasterizer.cuda_kernels_problem() is None, "compiled earlier"
