"""The in2n pipeline: nerfacto training in nerfstudio, with the edit loop run before every training step.

The Iterative Dataset Update itself is `in2n.dataset_update.loop.EditLoop`; this module connects it to nerfstudio:
the options, rendering a training view for an edit, micro-batched steps, the viewer panel, and the callbacks.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, Iterator, List, Literal, Optional, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor, nn

from in2n.console import notice, notice_once
from in2n.data.datamanager import In2nDataManager, In2nDataManagerConfig
from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, EditLoopConfig, ViewRender
from in2n.distributed import Ranks
from in2n.editors.base import Editor
from in2n.editors.factory import EditorConfig, EditorFactory, build_editor
from in2n.editors.sizing import edit_size
from in2n.model import In2nModelConfig
from in2n.process import prepare_process
from in2n.ray_chunks import SamplerSchedules, accumulate, automatic_chunks, chunk_slices, slice_batch
from in2n.validation import (
    dataset_problems,
    edit_problems,
    editor_problems,
    patch_problems,
    raise_problems,
    ray_chunk_problems,
)
from in2n.viewer_panel import PANEL_NAME, PANEL_STATE_KEY, EditSummaryPanel, LiveEditPanel

MIN_LPIPS_SIDE = 32
"""AlexNet, under LPIPS, pools an image down five times; smaller images have no features left to compare."""


@dataclass
class In2nPipelineConfig(VanillaPipelineConfig, EditorConfig, EditLoopConfig):
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

    def check(self) -> None:
        """Raise an In2nError naming every option that cannot give an edit, and what to change."""
        raise_problems(
            edit_problems(self, prompt_needed=self.editor == "ip2p")
            + editor_problems(self)
            + patch_problems(self.datamanager, self.model)
            + ray_chunk_problems(self.micro_batches(), self.datamanager)
            + dataset_problems(self.datamanager)
        )


class In2nPipeline(VanillaPipeline):
    """nerfacto training, interleaved with edits of its training views.

    Only training (test_mode "val") builds the editor and the edit loop; `ns-render` and `ns-viewer` set the pipeline
    up in "test" or "inference" mode and never load the diffusion model.

    Args:
        editor_factory: builds the editor from the training device; default: the one the options ask for.
    """

    config: In2nPipelineConfig
    datamanager: In2nDataManager

    def __init__(
        self,
        config: In2nPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[Any] = None,
        editor_factory: Optional[EditorFactory] = None,
    ) -> None:
        prepare_process()  # ns-render and ns-viewer build the pipeline before loading the run's checkpoint
        if test_mode == "val":
            config.check()
        # On several devices, Ranks.join below puts the model in DDP (nerfstudio's own wrapping is CUDA-only).
        super().__init__(config, device, test_mode, 1, local_rank, grad_scaler)
        self._grad_scaler = grad_scaler
        # Neither the loop nor the editor is a submodule: the diffusion weights must never reach state_dict().
        self.edit_loop: Optional[EditLoop] = None
        panel: nn.Module = EditSummaryPanel()
        if test_mode == "val":
            if config.edit_masks == "dataset":
                self.datamanager.use_masks_for_edits()
            editor = (editor_factory or partial(build_editor, config))(device)
            notice_oversize_views(editor, self.datamanager.training_images)
            self.edit_loop = EditLoop(
                config,
                editor,
                self.render_for_edit,
                self.datamanager.training_images,
                self.model,
                training_device=device,
                perceptual=self.lpips_distance if self.model.config.use_lpips else None,
            )
            notice(self.edit_loop.describe())
            panel = LiveEditPanel(self.edit_loop)
        # Registered under its title, which the viewer shows as the section's name.
        self.add_module(PANEL_NAME, panel)
        self.ranks: Optional[Ranks] = None
        if world_size > 1:  # several devices: each process trains on and edits its share (in2n.distributed)
            self.ranks = Ranks.join(self, world_size, panel)

    @property
    def _panel(self) -> nn.Module:
        return self._modules[PANEL_NAME]

    def get_train_loss_dict(self, step: int):
        if self.edit_loop is not None:
            # nerfstudio's trainer runs this under autocast; the editor runs in the precision its options name.
            with without_autocast():
                self.edit_loop.before_step(step)
        chunks = self.config.micro_batches()
        if chunks == 1 and self.ranks is None:
            return super().get_train_loss_dict(step)
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

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        # A nerfacto checkpoint holds no summary of an edit, nor does an in2n checkpoint of a version without the panel.
        super().load_pipeline({PANEL_STATE_KEY: {}, **loaded_state}, step)
        if isinstance(self._panel, EditSummaryPanel):
            self._panel.show(self._panel.get_extra_state(), step)

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        # The final checkpoint (saved just before AFTER_TRAIN) holds the edits in flight; nothing else needs them.
        return callbacks + [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], self.stop_edits)]

    def stop_edits(self, step: Optional[int] = None) -> None:
        """Drop the edits in flight and stop the edit worker thread."""
        if self.edit_loop is not None:
            self.edit_loop.close()

    def render_view(self, view: int) -> Tensor:
        """Render training view `view` as the model sees it in training: its own learned pose correction and
        appearance code. Returns RGB [H, W, 3] in [0, 1]."""
        return self.render_for_edit(view).rgb

    @torch.no_grad()
    def render_for_edit(self, view: int, with_points: bool = False) -> ViewRender:
        """`render_view`, and with `with_points` each pixel's expected surface point in the trained frame."""
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

    @torch.no_grad()
    def lpips_distance(self, a: Tensor, b: Tensor) -> Tensor:
        """The model's LPIPS between two batches [B, 3, H, W] in [0, 1]: [B] (NaN for images too small for it)."""
        if min(a.shape[-2:]) < MIN_LPIPS_SIDE:
            return torch.full((a.shape[0],), math.nan)
        device = self.device
        return self.model.lpips.net(a.to(device), b.to(device), normalize=True).flatten().cpu()


def notice_oversize_views(editor: Editor, images: TrainingImages) -> None:
    """Say once when training views are larger than the editor's edit size: they are edited smaller and scaled back."""
    max_edit_size = getattr(editor, "max_edit_size", None)
    if max_edit_size is None:
        return
    sizes = [images.image_size(view) for view in range(images.num_views)]
    height, width = max(sizes, key=max)
    if max(height, width) <= max_edit_size:
        return
    edit_height, edit_width = edit_size(height, width, max_edit_size, editor.vae_scale_factor)
    notice_once(
        f"views of up to {width}x{height} px are larger than --pipeline.max-edit-size {max_edit_size} px on the long "
        f"side: they are edited at that size (e.g. {edit_width}x{edit_height}) and scaled back ({editor.describe()} "
        f"works best at {editor.family.native_size} px and runs out of memory far above it)."
    )


@contextmanager
def without_autocast() -> Iterator[None]:
    """Turn off any autocast of the calling thread (CUDA's and the CPU's)."""
    with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        yield


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
