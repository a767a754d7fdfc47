"""splatfacto (nerfstudio 1.1.5) that renders wherever torch runs, and the splatfacto an edit trains.

splatfacto as shipped runs on CUDA only: it moves the camera intrinsics and the seed points' colours with `.cuda()`
and rasterizes with gsplat's CUDA kernels. `SplatModel` is splatfacto with its render routed through
`in2n.splat.rasterizer.rasterize` (gsplat's kernels on CUDA, torch on the CPU) and nothing moved to CUDA by hand; on
CUDA it renders exactly what splatfacto renders. Its checkpoints are splatfacto's (the same parameters and names), so
`in2n-splat` loads a `ns-train splatfacto` run and a `ns-train in2n-splatfacto` run alike.

`In2nSplatModel` is the model of an edit: LPIPS weights from the checkpoint (no AlexNet download) and a render of a
training view as it trains (its own pose correction and bilateral grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from torch import Tensor

from in2n.console import notice_once
from in2n.model import lpips_weights_from_checkpoint
from in2n.process import prepare_process
from in2n.splat.rasterizer import rasterize

Outputs = Dict[str, Union[Tensor, list]]


@dataclass
class SplatModelConfig(SplatfactoModelConfig):
    """splatfacto, rendering with gsplat's CUDA kernels on CUDA and in torch on the CPU."""

    _target: Type = field(default_factory=lambda: SplatModel)


class SplatModel(SplatfactoModel):
    """splatfacto that runs on the device it is given (see the module's docstring)."""

    config: SplatModelConfig
    gaussians_from_data: bool = True
    """Whether the Gaussians start from the dataset's points (False: a checkpoint replaces them once built)."""

    def __init__(self, *args, **kwargs) -> None:
        # ns-render and ns-viewer build the model before they load the run's checkpoint (see in2n.process).
        prepare_process()
        super().__init__(*args, **kwargs)

    def populate_modules(self) -> None:
        # splatfacto puts the seed points' colours on CUDA itself (`.cuda()`); build without them, then set them here.
        if self.gaussians_from_data and not self.config.random_init and not has_points(self.seed_points):
            notice_once(
                f"the dataset has no 3D points (no ply_file_path in its transforms.json): splatfacto starts from "
                f"{self.config.num_random} random Gaussians in a cube {self.config.random_scale} wide, which trains "
                "slower and worse than the scene's points. Process the data with ns-process-data, which writes them "
                "as sparse_pc.ply, or pass --pipeline.model.random-init True to start from random Gaussians knowingly."
            )
        colors = None
        if self.seed_points is not None and not self.config.random_init and self.seed_points[1].shape[0] > 0:
            colors = self.seed_points[1]
            self.seed_points = (self.seed_points[0], colors[:0])
        super().populate_modules()
        if colors is not None:
            self.seed_points = (self.seed_points[0], colors)
            with torch.no_grad():
                if self.config.sh_degree > 0:
                    self.features_dc.copy_(RGB2SH(colors.float() / 255))
                else:
                    self.features_dc.copy_(torch.logit(colors.float() / 255, eps=1e-10))
                self.features_rest.zero_()

    def get_outputs(self, camera: Cameras) -> Outputs:
        """splatfacto's render of one camera (with its training-time pose correction, bilateral grid, random
        background and downscaling when training)."""
        if not isinstance(camera, Cameras):
            return {}
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            return self.render(camera, self.camera_optimizer.apply_to_camera(camera), as_in_training=True)
        return self.render(camera, camera.camera_to_worlds, as_in_training=False)

    @torch.no_grad()
    def render_training_view(self, camera: Cameras) -> Outputs:
        """A training camera (its `cam_idx` in the metadata) rendered as it trains: with its learned pose correction
        and bilateral grid, but at full resolution, over the model's fixed background, with depth, and without
        touching the densification statistics."""
        was_training = self.training
        self.eval()
        try:
            return self.render(camera, self.camera_optimizer.apply_to_camera(camera), as_in_training=False, own=True)
        finally:
            self.train(was_training)

    def render(self, camera: Cameras, camera_to_world: Tensor, as_in_training: bool, own: bool = False) -> Outputs:
        """splatfacto's get_outputs, with the rasterizer of the device and without `.cuda()`.

        Args:
            camera: one camera.
            camera_to_world: its pose [1, 3, 4] (with the learned correction, for a training view).
            as_in_training: a training step's render: downscaled early in training, random background, and the
                densification strategy fed.
            own: apply the camera's own bilateral grid (a training view's appearance) outside training too.
        """
        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
        else:
            crop_ids = None
        params = {name: value if crop_ids is None else value[crop_ids] for name, value in self.gauss_params.items()}
        colors = torch.cat((params["features_dc"][:, None, :], params["features_rest"]), dim=1)

        downscale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / downscale)
        intrinsics = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        self.last_size = (height, width)
        camera.rescale_output_resolution(downscale)

        if self.config.rasterize_mode not in ("antialiased", "classic"):
            raise ValueError(f"Unknown rasterize_mode: {self.config.rasterize_mode}")
        render_mode = "RGB+ED" if self.config.output_depth_during_training or not self.training else "RGB"
        if self.config.sh_degree > 0:
            sh_degree: Optional[int] = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors = torch.sigmoid(colors).squeeze(1)
            sh_degree = None

        render, alpha, self.info = rasterize(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
            colors=colors,
            viewmats=world_to_camera(camera_to_world.to(self.device)),
            Ks=intrinsics,
            width=width,
            height=height,
            near_plane=0.01,
            far_plane=1e10,
            sh_degree=sh_degree,
            render_mode=render_mode,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )
        if as_in_training:
            self.strategy.step_pre_backward(
                self.gauss_params, getattr(self, "optimizers", {}), self.strategy_state, self.step, self.info
            )
        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        if self.config.use_bilateral_grid and (as_in_training or own):
            if camera.metadata is not None and "cam_idx" in camera.metadata:
                rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)
        depth = None
        if render_mode == "RGB+ED":
            depth = torch.where(alpha > 0, render[..., 3:4], render[..., 3:4].detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    def reset_densification(self) -> None:
        """Restart the densification statistics, sized to the Gaussians the model holds on their next update."""
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)


def has_points(seed_points: Optional[Tuple[Tensor, Tensor]]) -> bool:
    """Whether the dataparser gave splatfacto any points to start its Gaussians from."""
    return seed_points is not None and seed_points[0].shape[0] > 0


def world_to_camera(camera_to_world: Tensor) -> Tensor:
    """nerfstudio's camera-to-world poses [C, 3, 4] (OpenGL axes) as gsplat's world-to-camera matrices [C, 4, 4]
    (OpenCV axes): splatfacto's get_viewmat, without torch.compile (which compiles C++ on the CPU at every start)."""
    rotation = camera_to_world[:, :3, :3] * torch.tensor([[[1, -1, -1]]], device=camera_to_world.device)
    translation = camera_to_world[:, :3, 3:4]
    inverse_rotation = rotation.transpose(1, 2)
    viewmat = torch.zeros(camera_to_world.shape[0], 4, 4, device=camera_to_world.device, dtype=camera_to_world.dtype)
    viewmat[:, 3, 3] = 1.0
    viewmat[:, :3, :3] = inverse_rotation
    viewmat[:, :3, 3:4] = -torch.bmm(inverse_rotation, translation)
    return viewmat


@dataclass
class In2nSplatModelConfig(SplatModelConfig):
    """splatfacto trained on edited views. Its shape options (sh_degree, the bilateral grid, the camera optimizer)
    are taken from the run being edited."""

    _target: Type = field(default_factory=lambda: In2nSplatModel)


class In2nSplatModel(SplatModel):
    """The model of a splat edit (see the module's docstring)."""

    config: In2nSplatModelConfig
    gaussians_from_data = False

    def populate_modules(self) -> None:
        with lpips_weights_from_checkpoint():
            super().populate_modules()
