"""The in2n pipeline for NeRFs: nerfacto training in nerfstudio, with the edit loop run before every training step.

What every edit pipeline shares (the options, the loop, the viewer panel, the callbacks) is in2n.edit_pipeline; this
module adds what is nerfacto's: rendering a training view ray by ray, micro-batched steps, LPIPS on ray patches.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor, nn

from in2n.data.datamanager import In2nDataManager, In2nDataManagerConfig
from in2n.dataset_update.loop import ViewRender
from in2n.edit_pipeline import EditPipeline, EditPipelineConfig
from in2n.model import In2nModelConfig
from in2n.ray_chunks import SamplerSchedules, accumulate, automatic_chunks, chunk_slices, slice_batch
from in2n.validation import patch_problems, ray_chunk_problems


@dataclass
class In2nPipelineConfig(EditPipelineConfig):
    """Instruct-NeRF2NeRF: train nerfacto while replacing its training views with edited renders."""

    _target: Type = field(default_factory=lambda: In2nPipeline)
    datamanager: DataManagerConfig = field(default_factory=In2nDataManagerConfig)
    """Holds the training images the edit replaces."""
    model: ModelConfig = field(default_factory=In2nModelConfig)
    """nerfacto with L1 and LPIPS losses; its shape options must match the loaded nerfacto run."""
    ray_chunks: Optional[int] = None
    """Split each training step's rays into this many equal micro-batches of whole LPIPS patches and accumulate their
    gradients: the same step (same rays, same gradients) with a fraction of the activation memory, for more kernel
    launches. Must divide the patches per step (16 for the 16384 rays of in2n in 32x32 patches). Default: parts of at
    most 4096 rays (4 for in2n and in2n-big, 1 for in2n-lite)."""

    def micro_batches(self) -> int:
        """The number of micro-batches a training step runs in."""
        datamanager = self.datamanager
        if self.ray_chunks is not None:
            return self.ray_chunks
        patch = getattr(datamanager, "patch_size", 1)
        return automatic_chunks(getattr(datamanager, "train_num_rays_per_batch", 1), patch * patch)

    def scene_problems(self) -> List[str]:
        return patch_problems(self.datamanager, self.model) + ray_chunk_problems(self.micro_batches(), self.datamanager)


class In2nPipeline(EditPipeline):
    """nerfacto training, interleaved with edits of its training views (see EditPipeline)."""

    config: In2nPipelineConfig
    datamanager: In2nDataManager

    def train_step(self, step: int):
        chunks = self.config.micro_batches()
        if chunks == 1 and self.ranks is None:
            return super().train_step(step)
        if self.ranks is None:
            ray_bundle, batch = self.datamanager.next_train(step)
        else:  # the same rays in every process
            ray_bundle, batch = self.ranks.next_train(self.datamanager, step)
        num_rays = len(ray_bundle)
        patch = self.datamanager.config.patch_size
        schedules = SamplerSchedules(self.model)

        def step_part(part: slice):
            schedules.restore()  # each part trains the proposal networks if and only if the whole step would
            outputs = self._model(ray_bundle[part])
            part_batch = slice_batch(batch, part, num_rays)
            metrics = self.model.get_metrics_dict(outputs, part_batch)
            return outputs, self.model.get_loss_dict(outputs, part_batch, metrics), metrics

        if self.ranks is not None:  # this process's share of the step
            return self.ranks.accumulate(num_rays, patch * patch, self.config.ray_chunks, step_part, self._backward)
        parts = chunk_slices(num_rays, chunks, patch * patch)
        return accumulate(parts, step_part, self._backward)

    def _backward(self, loss: Tensor) -> None:
        """Back-propagate one micro-batch as the trainer back-propagates a step (through its gradient scaler)."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            (loss if self._grad_scaler is None else self._grad_scaler.scale(loss)).backward()

    @torch.no_grad()
    def render_for_edit(self, view: int, with_points: bool = False) -> ViewRender:
        cameras = self.datamanager.train_dataset.cameras
        camera = cameras[view : view + 1].to(self.device)
        camera.metadata = {"cam_idx": view}
        camera.camera_to_worlds = self.model.camera_optimizer.apply_to_camera(camera)
        ray_bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
        ray_bundle.camera_indices = torch.full_like(ray_bundle.camera_indices, view)
        with own_view_rendering(self.model):
            outputs = self.model.get_outputs_for_camera_ray_bundle(ray_bundle)
        points = None
        if with_points:
            points = ray_bundle.origins + ray_bundle.directions * outputs["depth"]
        return ViewRender(outputs["rgb"].clamp(0.0, 1.0), points)

    def lpips_network(self) -> Optional[nn.Module]:
        return self.model.lpips.net if self.model.config.use_lpips else None


@contextmanager
def own_view_rendering(model: Model) -> Iterator[None]:
    """Render deterministically (eval mode), but with each ray's own per-view appearance code.

    nerfacto's field only looks up per-view appearance embeddings in training mode; in eval mode it uses
    their average, which is right for novel views but wrong when re-rendering a training view to edit it.
    """
    was_training = model.training
    model.eval()
    model.field.train()
    try:
        yield
    finally:
        model.train(was_training)
