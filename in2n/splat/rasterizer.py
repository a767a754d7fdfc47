"""Rasterizing Gaussians where gsplat's CUDA kernels run, and on the CPU where they do not.

splatfacto calls `gsplat.rendering.rasterization`, whose every step is a CUDA kernel. On CUDA, `rasterize` calls it
unchanged. On the CPU it runs gsplat's own pure-torch reference of each step that has one
(`gsplat.cuda._torch_impl`: the projection of the Gaussians to the image, their covariances, the spherical harmonics)
and composites them here, in torch, by the rules of gsplat's CUDA kernel (`rasterize_to_pixels_fwd.cu`): 16x16 tiles,
each tile's Gaussians by depth, alpha = min(0.999, opacity * exp(-sigma)) skipped below 1/255, a pixel done once its
transmittance would fall to 1e-4. gsplat 1.4.0's own `_rasterization` cannot do this part on the CPU: it still calls
the CUDA kernels for the tile lists and the spherical harmonics, and composites through nerfacc, which is CUDA-only.
Gradients come from torch's autograd; with `absgrad`, `means2d.absgrad` holds the sum over pixels of each pixel's
absolute gradient, as gsplat's CUDA backward writes it (splatfacto densifies on it).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import torch
from torch import Tensor

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RasterizeMode = Literal["classic", "antialiased"]

TILE_SIZE = 16
"""Side of the square pixel tiles, as gsplat's default."""
MAX_ALPHA = 0.999
"""A Gaussian's opacity at a pixel is capped here (gsplat's kernel)."""
MIN_ALPHA = 1.0 / 255.0
"""A Gaussian fainter than this at a pixel is skipped there (gsplat's kernel)."""
MIN_TRANSMITTANCE = 1e-4
"""A pixel is done before the Gaussian that would bring its transmittance to this or below (gsplat's kernel)."""
LOG_MIN_TRANSMITTANCE = math.log(MIN_TRANSMITTANCE)
GAUSSIANS_PER_BATCH = 512
"""Gaussians of a tile composited at once: a tile stops early once all its pixels are done, as the kernel does."""


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: Optional[int] = None,
    render_mode: RenderMode = "RGB",
    absgrad: bool = False,
    rasterize_mode: RasterizeMode = "classic",
    backgrounds: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """gsplat's `rasterization` with splatfacto's options (one image per camera, `packed=False`): on CUDA gsplat's
    kernels, elsewhere `rasterize_in_torch`. Shapes as gsplat's: means [N, 3], quats [N, 4], scales [N, 3] (not in
    log space), opacities [N] (after the sigmoid), colors [N, D] or SH coefficients [N, K, 3], viewmats [C, 4, 4]
    (world to camera, OpenCV axes), Ks [C, 3, 3]. Returns colours [C, H, W, D], alphas [C, H, W, 1] and the
    projection's meta (radii, means2d, ...), which gsplat's densification strategy reads."""
    if means.is_cuda:
        from gsplat.rendering import rasterization

        return rasterization(
            means=means, quats=quats, scales=scales, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks,
            width=width, height=height, near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree,
            packed=False, render_mode=render_mode, sparse_grad=False, absgrad=absgrad, rasterize_mode=rasterize_mode,
            backgrounds=backgrounds,
        )  # fmt: skip
    one_thread_for_small_operations()
    return rasterize_in_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, sh_degree=sh_degree, render_mode=render_mode, absgrad=absgrad,
        rasterize_mode=rasterize_mode, backgrounds=backgrounds,
    )  # fmt: skip


def one_thread_for_small_operations() -> None:
    """Run torch's CPU operations on one thread from now on in this process.

    The CPU route is thousands of small tensor operations per image, forward and backward, and torch's thread pool
    costs more than it gives on them: a training step of the CPU test preset (64x48 views, 4000 Gaussians) took
    0.11 s on one thread and 2.2 s on two, on a busy 2-core machine. Rendering splats on the CPU is for tests and the
    demo; the diffusion editor in the same process then runs on one thread too.
    """
    if torch.get_num_threads() > 1:
        torch.set_num_threads(1)


def rasterize_in_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    render_mode: RenderMode = "RGB",
    absgrad: bool = False,
    rasterize_mode: RasterizeMode = "classic",
    backgrounds: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """`rasterize` in torch alone, on any device (see the module's docstring)."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

    num_cameras, num_gaussians = viewmats.shape[0], means.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    opacities = opacities.repeat(num_cameras, 1)
    if compensations is not None:
        opacities = opacities * compensations
    if sh_degree is None:
        colors = colors.expand(num_cameras, -1, -1) if colors.dim() == 2 else colors
    else:
        camera_centres = torch.inverse(viewmats)[:, :3, 3]
        directions = means[None, :, :] - camera_centres[:, None, :]
        coefficients = colors.expand(num_cameras, -1, -1, -1) if colors.dim() == 3 else colors
        # As gsplat's rasterization: SH colours are offset by 0.5 and cut at 0.
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, directions, coefficients) + 0.5, 0.0)
    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat((colors, depths[..., None]), dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(num_cameras, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(num_cameras, 1)

    if absgrad and means2d.requires_grad:
        means2d.absgrad = torch.zeros_like(means2d)  # filled by the backward pass
    renders, alphas = [], []
    for camera in range(num_cameras):
        image = composite(
            means2d, conics[camera], opacities[camera], colors[camera], depths[camera], radii[camera], camera,
            width, height, absgrad=absgrad,
        )  # fmt: skip
        renders.append(image[0])
        alphas.append(image[1])
    render_colors, render_alphas = torch.stack(renders), torch.stack(alphas)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[:, None, None, :] * (1.0 - render_alphas)
    if render_mode in ("ED", "RGB+ED"):
        # The expected depth: the accumulated depth over the accumulated opacity, as gsplat's rasterization.
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    meta = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": math.ceil(width / TILE_SIZE),
        "tile_height": math.ceil(height / TILE_SIZE),
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "n_cameras": num_cameras,
    }
    assert render_colors.shape[:3] == (num_cameras, height, width) and num_gaussians == means2d.shape[1]
    return render_colors, render_alphas, meta


def tile_ranges(means2d: Tensor, radii: Tensor, tiles_x: int, tiles_y: int) -> Tensor:
    """The tiles each Gaussian touches as [N, 4]: first and past-the-last tile column, then row; gsplat's isect_tiles
    (a Gaussian covers the square of side 2 * radius about its mean, in tiles rounded outwards)."""
    tile_means = means2d.detach() / TILE_SIZE
    tile_radii = radii.to(tile_means.dtype)[:, None] / TILE_SIZE
    low, high = torch.floor(tile_means - tile_radii), torch.ceil(tile_means + tile_radii)
    limits = torch.tensor([tiles_x, tiles_y], device=means2d.device)
    low = torch.minimum(torch.clamp_min(low, 0).long(), limits)
    high = torch.minimum(torch.clamp_min(high, 0).long(), limits)
    return torch.stack([low[:, 0], high[:, 0], low[:, 1], high[:, 1]], dim=1)


def tile_lists(means2d: Tensor, radii: Tensor, depths: Tensor, tiles_x: int, tiles_y: int) -> Dict[int, Tensor]:
    """One camera's Gaussians in each tile it touches, front to back, by tile index (row-major): gsplat's isect_tiles
    and its sort (a stable radix sort by depth, so ties keep index order). Tiles without Gaussians are left out."""
    visible = torch.nonzero(radii > 0).squeeze(1)
    order = visible[torch.sort(depths.detach()[visible], stable=True).indices]
    ranges = tile_ranges(means2d[order], radii[order], tiles_x, tiles_y)
    lists: Dict[int, Tensor] = {}
    for tile_y in range(tiles_y):
        in_row = (ranges[:, 2] <= tile_y) & (tile_y < ranges[:, 3])
        for tile_x in range(tiles_x):
            members = order[in_row & (ranges[:, 0] <= tile_x) & (tile_x < ranges[:, 1])]
            if len(members):
                lists[tile_y * tiles_x + tile_x] = members
    return lists


def composite(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    depths: Tensor,
    radii: Tensor,
    camera: int,
    width: int,
    height: int,
    absgrad: bool = False,
) -> Tuple[Tensor, Tensor]:
    """One camera's image [H, W, D] and alpha [H, W, 1] from its projected Gaussians (means2d is [C, N, 2], the
    rest this camera's [N, ...]): front to back in each tile, by the rules of gsplat's kernel."""
    tiles_x, tiles_y = math.ceil(width / TILE_SIZE), math.ceil(height / TILE_SIZE)
    lists = tile_lists(means2d[camera], radii, depths, tiles_x, tiles_y)
    empty = torch.empty(0, dtype=torch.long, device=means2d.device)
    channels = colors.shape[-1]
    rows: List[Tensor] = []
    alpha_rows: List[Tensor] = []
    for tile_y in range(tiles_y):
        y0, y1 = tile_y * TILE_SIZE, min(height, (tile_y + 1) * TILE_SIZE)
        tiles, alpha_tiles = [], []
        for tile_x in range(tiles_x):
            x0, x1 = tile_x * TILE_SIZE, min(width, (tile_x + 1) * TILE_SIZE)
            members = lists.get(tile_y * tiles_x + tile_x, empty)
            color, alpha = composite_tile(
                means2d, conics, opacities, colors, members, camera, (x0, x1, y0, y1), absgrad
            )
            tiles.append(color.reshape(y1 - y0, x1 - x0, channels))
            alpha_tiles.append(alpha.reshape(y1 - y0, x1 - x0, 1))
        rows.append(torch.cat(tiles, dim=1))
        alpha_rows.append(torch.cat(alpha_tiles, dim=1))
    return torch.cat(rows, dim=0), torch.cat(alpha_rows, dim=0)


def composite_tile(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    members: Tensor,
    camera: int,
    bounds: Tuple[int, int, int, int],
    absgrad: bool,
) -> Tuple[Tensor, Tensor]:
    """The pixels of one tile (x0, x1, y0, y1) as [P, D] colours and [P] alphas, from its Gaussians `members`
    (indices, front to back).

    Each Gaussian's sigma = 0.5 (a dx^2 + c dy^2) + b dx dy at every pixel (dx, dy: from its 2D mean) is one matrix
    product of the pixels' monomials [x^2, y^2, xy, x, y, 1] with per-Gaussian coefficients, in coordinates local to
    the tile (small numbers: no cancellation in float32); transmittance is summed in log space. Both are far cheaper
    to differentiate than the same arithmetic pixel by pixel.
    """
    x0, x1, y0, y1 = bounds
    device, dtype = colors.device, colors.dtype
    ys, xs = torch.meshgrid(
        torch.arange(y1 - y0, device=device, dtype=dtype) + 0.5,  # pixel centres, as the kernel
        torch.arange(x1 - x0, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )  # fmt: skip
    xs, ys = xs.flatten(), ys.flatten()
    monomials = torch.stack([xs * xs, ys * ys, xs * ys, xs, ys, torch.ones_like(xs)], dim=1)
    origin = torch.tensor([x0, y0], device=device, dtype=dtype)
    log_transmittance = colors.new_zeros(xs.shape[0])
    color = colors.new_zeros(xs.shape[0], colors.shape[-1])
    alpha_sum = colors.new_zeros(xs.shape[0])
    for start in range(0, len(members), GAUSSIANS_PER_BATCH):
        batch = members[start : start + GAUSSIANS_PER_BATCH]
        mean_x, mean_y = (means2d[camera, batch] - origin).unbind(-1)
        a, b, c = conics[batch].unbind(-1)
        coefficients = torch.stack(
            [
                0.5 * a,
                0.5 * c,
                b,
                -(a * mean_x + b * mean_y),
                -(c * mean_y + b * mean_x),
                0.5 * a * mean_x * mean_x + 0.5 * c * mean_y * mean_y + b * mean_x * mean_y,
            ]
        )
        sigma = monomials @ coefficients  # [P, B]
        if absgrad and sigma.requires_grad:
            sigma.register_hook(absolute_gradient_hook(means2d, camera, batch, xs, ys, mean_x, mean_y, a, b, c))
        # The quadratic form is positive; rounding must not drop a Gaussian at its centre (the kernel skips sigma < 0).
        alpha = torch.clamp_max(opacities[batch] * torch.exp(-torch.clamp_min(sigma, 0.0)), MAX_ALPHA)
        alpha = torch.where(alpha >= MIN_ALPHA, alpha, torch.zeros_like(alpha))
        log_pass = torch.log1p(-alpha)
        log_after = log_transmittance[:, None] + torch.cumsum(log_pass, dim=1)  # transmittance past each Gaussian
        weight = alpha * torch.exp(log_after - log_pass) * (log_after.detach() > LOG_MIN_TRANSMITTANCE)
        color = color + weight @ colors[batch]
        alpha_sum = alpha_sum + weight.sum(dim=1)
        log_transmittance = log_after[:, -1]
        if not bool((log_transmittance.detach() > LOG_MIN_TRANSMITTANCE).any()):
            break
    return color, alpha_sum


def absolute_gradient_hook(
    means2d: Tensor,
    camera: int,
    batch: Tensor,
    xs: Tensor,
    ys: Tensor,
    mean_x: Tensor,
    mean_y: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
):
    """A gradient hook on a batch's sigmas [P, B]: adds, to `means2d.absgrad`, the sum over the pixels of the absolute
    gradient each pixel sends to each 2D mean (gsplat's absgrad), and leaves the gradient as it is."""

    def hook(grad: Tensor) -> None:
        with torch.no_grad():
            dx = xs[:, None] - mean_x.detach()
            dy = ys[:, None] - mean_y.detach()
            # d sigma / d mean = -(a dx + b dy, c dy + b dx)
            grad_x = (grad * (a.detach() * dx + b.detach() * dy)).abs().sum(dim=0)
            grad_y = (grad * (c.detach() * dy + b.detach() * dx)).abs().sum(dim=0)
            means2d.absgrad[camera].index_add_(0, batch, torch.stack([grad_x, grad_y], dim=1))

    return hook


# ----------------------------------------------------------------------------------------------------------------
# Whether gsplat's CUDA kernels are there.


def cuda_kernels_problem() -> Optional[str]:
    """What keeps gsplat from rasterizing on CUDA here and what to install, or None when its kernels are built (or
    can be: a CUDA compiler is there, and gsplat compiles them on first use). Checked without importing gsplat's
    backend, which would start that compile."""
    if importlib.util.find_spec("gsplat.csrc") is not None:  # a wheel with the kernels compiled
        return None
    backend = sys.modules.get("gsplat.cuda._backend")
    if backend is not None:
        return None if getattr(backend, "_C", None) is not None else missing_kernels_message()
    if jit_build_folder().joinpath("gsplat_cuda.so").exists() or shutil.which("nvcc") is not None:
        return None
    return missing_kernels_message()


def jit_build_folder() -> Path:
    """Where torch keeps the kernels gsplat compiles on first use (gsplat asks torch the same way)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory("gsplat_cuda", verbose=False))


def missing_kernels_message() -> str:
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    cuda = torch.version.cuda or "?"
    wheel_index = f"https://docs.gsplat.studio/whl/pt{torch_version.replace('.', '')}cu{cuda.replace('.', '')}"
    return (
        "gsplat, which splatfacto renders with, has no CUDA kernels here: no prebuilt gsplat and no CUDA compiler "
        "(nvcc) to build them. Install the prebuilt gsplat 1.4.0 for your torch and CUDA (torch "
        f"{torch_version}, CUDA {cuda}): `pip install gsplat==1.4.0 --index-url {wheel_index}` (the combinations "
        "are listed at https://docs.gsplat.studio/whl), or install the CUDA toolkit of your torch so that gsplat "
        "compiles its kernels on first use (a few minutes, once). Without a GPU, --machine.device-type cpu runs "
        "the splats in torch on the CPU (slowly)."
    )
