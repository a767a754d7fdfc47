"""The in2n pipeline for Gaussian splats: splatfacto training, with the edit loop run before every training step.

What every edit pipeline shares (the options, the loop, the viewer panel, the callbacks, LPIPS for the progress) is
in2n.edit_pipeline; this module adds what is splatfacto's: a training view rendered with its own camera, the training
images in the datamanager's image cache, gsplat's CUDA kernels checked before anything loads, and the densification
statistics restarted when a checkpoint is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.models.base_model import ModelConfig
from torch import nn

from in2n.dataset_update.loop import ViewRender
from in2n.edit_pipeline import EditPipeline, EditPipelineConfig
from in2n.errors import In2nError
from in2n.splat.datamanager import In2nSplatDataManager, In2nSplatDataManagerConfig
from in2n.splat.model import In2nSplatModel, In2nSplatModelConfig
from in2n.splat.rasterizer import cuda_kernels_problem


@dataclass
class In2nSplatPipelineConfig(EditPipelineConfig):
    """Edit Gaussian splats: train splatfacto while replacing its training views with edited renders."""

    _target: Type = field(default_factory=lambda: In2nSplatPipeline)
    datamanager: DataManagerConfig = field(default_factory=In2nSplatDataManagerConfig)
    """splatfacto's datamanager, holding the training images the edit replaces."""
    model: ModelConfig = field(default_factory=In2nSplatModelConfig)
    """splatfacto; its shape options are taken from the run being edited."""

    def scene_problems(self) -> List[str]:
        if getattr(self.datamanager, "cache_images_type", "float32") != "float32":
            return [
                "--pipeline.datamanager.cache-images-type uint8 would round every edit to 8 bits as it is written into "
                "the training images; leave it at float32."
            ]
        return []

    def several_devices_problem(self) -> Optional[str]:
        # Data-parallel training needs the same parameters in every process; splatfacto's densification grows and
        # prunes each process's Gaussians from its own gradients, so they would part ways at the first refinement.
        return (
            "the splat edit trains on one device: splatfacto adds and removes Gaussians as it trains, which "
            "data-parallel processes cannot keep equal. Leave --machine.num-devices at 1."
        )


class In2nSplatPipeline(EditPipeline):
    """splatfacto training, interleaved with edits of its training views (see EditPipeline)."""

    config: In2nSplatPipelineConfig
    datamanager: In2nSplatDataManager

    @property
    def model(self) -> In2nSplatModel:
        return super().model  # type: ignore[return-value]

    def check_device(self, device: str) -> None:
        if torch.device(device).type == "cuda":
            problem = cuda_kernels_problem()
            if problem is not None:
                raise In2nError(problem)

    @torch.no_grad()
    def render_for_edit(self, view: int, with_points: bool = False) -> ViewRender:
        camera = self.datamanager.train_dataset.cameras[view : view + 1].to(self.device)
        camera.metadata = {"cam_idx": view}
        outputs = self.model.render_training_view(camera)
        points = None
        if with_points:
            # gsplat's depth is along the camera's axis; nerfstudio's rays have unit directions, and the norm of each
            # before normalising (its z being 1) converts one into the other.
            camera.camera_to_worlds = self.model.camera_optimizer.apply_to_camera(camera)
            rays = camera.generate_rays(camera_indices=0, keep_shape=True)
            distance = outputs["depth"] * rays.metadata["directions_norm"]
            points = rays.origins + rays.directions * distance
        return ViewRender(outputs["rgb"].clamp(0.0, 1.0), points)

    def lpips_network(self) -> Optional[nn.Module]:
        return self.model.lpips.net

    def after_load(self) -> None:
        # splatfacto's load replaces every Gaussian parameter with one of the checkpoint's size; the statistics the
        # densification gathered belong to the Gaussians the model was built with.
        self.model.reset_densification()
