"""The Iterative Dataset Update: every `edit_rate` steps, render views, edit them, write them back."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Literal, Optional, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import writer
from torch import Tensor

from in2n.background_edits import (
    ConcurrentEdits,
    EditRequest,
    EditWorker,
    PendingEdit,
    edits_run_concurrently,
    finished,
    raise_if_failed,
)
from in2n.data.datamanager import In2nDataManager, In2nDataManagerConfig
from in2n.edit_strips import log_edit_strips, strips_due
from in2n.editing.base import Editor, EditSettings
from in2n.editing.loading import DEFAULT_IP2P_MODEL
from in2n.logging import notice
from in2n.model import In2nModelConfig
from in2n.validation import check_pipeline_config
from in2n.viewer_controls import EditControls

EDIT_STATE_VERSION = 2
"""2 added the edits in flight ("pending"); version 1 states load as having none."""


@dataclass
class In2nPipelineConfig(VanillaPipelineConfig):
    """Instruct-NeRF2NeRF: train nerfacto while replacing its training views with edited renders."""

    _target: Type = field(default_factory=lambda: In2nPipeline)
    datamanager: DataManagerConfig = field(default_factory=In2nDataManagerConfig)
    """Holds the training images the edit replaces."""
    model: ModelConfig = field(default_factory=In2nModelConfig)
    """nerfacto with L1 and LPIPS losses; its shape options must match the loaded nerfacto run."""
    prompt: str = "don't change the image"
    """The instruction, e.g. "give him a cowboy hat"."""
    guidance_scale: float = 7.5
    """Text guidance scale: higher follows the instruction more strongly."""
    image_guidance_scale: float = 1.5
    """Image guidance scale: higher stays closer to the original views."""
    diffusion_steps: int = 20
    """DDIM steps per edit."""
    lower_bound: float = 0.02
    """Lowest noise level an edit starts from, as a fraction of the diffusion process."""
    upper_bound: float = 0.98
    """Highest noise level an edit starts from, as a fraction of the diffusion process."""
    edit_rate: int = 10
    """Edit views every this many training steps."""
    edit_count: int = 1
    """Views edited each time (several are batched into one diffusion call)."""
    editor: Literal["ip2p", "reference"] = "ip2p"
    """ip2p: InstructPix2Pix. reference: a deterministic recolouring that ignores the prompt, for tests and the
    offline demo."""
    ip2p_model: str = DEFAULT_IP2P_MODEL
    """InstructPix2Pix weights: a Hugging Face hub id, or a local folder saved with save_pretrained."""
    ip2p_device: Optional[str] = None
    """Device for InstructPix2Pix (e.g. cuda:1); default: the training device."""
    ip2p_use_full_precision: bool = True
    """Run InstructPix2Pix in fp32; False uses fp16 on CUDA (on the CPU, fp32 is used either way)."""
    max_edit_size: int = 512
    """Views larger than this on their long side are edited at this size and scaled back."""
    scale_steps_with_noise: bool = False
    """Run only the DDIM steps below each edit's noise level (img2img strength semantics): faster, not identical."""
    seed: int = 0
    """Seeds the order of views and every edit's noise, so a run and its resume are reproducible."""
    concurrent_edits: ConcurrentEdits = "auto"
    """Edit on a worker thread while the NeRF keeps training. An edit requested at step s is then written at step
    s + edit_rate (waited for if unfinished), one edit interval later than without, so results do not depend on the
    devices' speed. auto: on when InstructPix2Pix has its own device (--pipeline.ip2p-device, e.g. cuda:1). on: also
    on a shared device, where the two take turns on it."""
    log_strips_every: int = 50
    """Log original | render | edited strips of the edited views to the logger (--vis) every this many edits; 0: off."""


class In2nPipeline(VanillaPipeline):
    """nerfacto training, interleaved with edits of its training views (DESIGN §1)."""

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
    ) -> None:
        if test_mode == "val":
            check_pipeline_config(config)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.edit_controls = EditControls(config, on_reset=self.request_reset)
        # The editor is not a submodule: its weights must never reach state_dict() or a checkpoint, and only
        # training builds it (ns-render and ns-viewer set the pipeline up in "test" or "inference" mode).
        self._editor: Optional[Editor] = None
        self._schedule = None
        self.edited_views: set[int] = set()
        self.edit_start_step: Optional[int] = None
        self._initial_model_state: Optional[Dict[str, Tensor]] = None
        self._worker: Optional[EditWorker] = None
        self._pending: List[PendingEdit] = []
        self._reset_requested = threading.Event()
        if test_mode == "val":
            from in2n.editing.factory import build_editor
            from in2n.schedule import EditSchedule

            self._editor = build_editor(config, default_device=device)
            self._schedule = EditSchedule(self.datamanager.num_views, seed=config.seed)
            concurrently = ""
            if edits_run_concurrently(config.concurrent_edits, self._editor, device):
                self._worker = EditWorker(self._editor)
                concurrently = (
                    f"; edits run beside training and are written {config.edit_rate} steps after their render"
                )
            notice(f"editing with {self._editor.describe()}; {self.datamanager.num_views} training views{concurrently}")

    @property
    def editor(self) -> Optional[Editor]:
        return self._editor

    @property
    def schedule(self):
        return self._schedule

    def edit_settings(self) -> EditSettings:
        """The settings of the next edit: the config, as changed live in the viewer."""
        controls = self.edit_controls
        return EditSettings(
            guidance_scale=controls.guidance_scale.value,
            image_guidance_scale=controls.image_guidance_scale.value,
            diffusion_steps=self.config.diffusion_steps,
            lower_bound=self.config.lower_bound,
            upper_bound=self.config.upper_bound,
            scale_steps_with_noise=self.config.scale_steps_with_noise,
        )

    @property
    def pending_edits(self) -> List[PendingEdit]:
        """Edits handed to the worker thread and not yet written, oldest first."""
        return list(self._pending)

    def get_train_loss_dict(self, step: int):
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self.reset_edit()
        if self._editor is not None:
            self.write_finished_edits(step)
            if step % self.config.edit_rate == 0 and not self.edit_controls.paused:
                self.edit_views(step)
        return super().get_train_loss_dict(step)

    def edit_views(self, step: int) -> List[int]:
        """Edit the next views of the schedule and write them into the training images; returns those written.

        With concurrent edits, the renders are handed to the worker thread instead and nothing is written now:
        `write_finished_edits` writes them at step + edit_rate.
        """
        assert self._editor is not None and self._schedule is not None
        if self.edit_start_step is None:
            self.edit_start_step = step
        views = self._schedule.next_views(self.config.edit_count)
        requests = [self._request_edit(group, step) for group in group_by_size(views, self.datamanager.image_size)]
        if self._worker is not None:
            due_step = step + self.config.edit_rate
            self._pending += [PendingEdit(r, due_step, self._start_edit(r)) for r in requests]
            return []
        written: List[int] = []
        for request in requests:
            written += self._write_edit(request, request.run(self._editor))
        self._record_progress(step)
        return written

    def write_finished_edits(self, step: int) -> List[int]:
        """Write the edits due at `step` (waiting for unfinished ones); returns the views written.

        A failed edit is re-raised here as soon as it is known, with the worker's exception and traceback.
        """
        raise_if_failed(self._pending)
        due = [edit for edit in self._pending if edit.due_step <= step]
        if not due:
            return []
        self._pending = [edit for edit in self._pending if edit.due_step > step]
        written: List[int] = []
        for edit in due:
            written += self._write_edit(edit.request, edit.result.result())
        self._record_progress(step)
        return written

    def _request_edit(self, views: List[int], step: int) -> EditRequest:
        """Render the views now (the NeRF is only used on the training thread) and gather the edit's inputs."""
        renders = torch.stack([self.render_view(view) for view in views]).permute(0, 3, 1, 2)
        return EditRequest(
            step=step,
            views=views,
            renders=renders.cpu(),
            originals=self._originals(views),
            prompt=self.edit_controls.prompt.value,
            settings=self.edit_settings(),
            seeds=[edit_seed(self.config.seed, step, view) for view in views],
        )

    def _start_edit(self, request: EditRequest) -> Future:
        """On the worker thread if edits run concurrently, otherwise now, on this thread."""
        assert self._editor is not None
        if self._worker is not None:
            return self._worker.submit(request)
        return finished(request.run(self._editor))

    def _originals(self, views: List[int]) -> Tensor:
        return torch.stack([self.datamanager.original_rgb(view) for view in views]).permute(0, 3, 1, 2).cpu()

    def _write_edit(self, request: EditRequest, edited: Tensor) -> List[int]:
        """Write an edit's finite images into the training images; queue the other views for a retry."""
        assert self._schedule is not None
        views, step = request.views, request.step
        if strips_due(step, self.config.edit_rate, self.config.log_strips_every):
            log_edit_strips(views, request.originals, request.renders, edited, step)
        written = []
        for view, image in zip(views, edited, strict=False):
            if not torch.isfinite(image).all():
                notice(f"the edit of view {view} at step {step} was not finite (NaN/inf); kept its image, will retry")
                self._schedule.mark_failed(view)
                continue
            self.datamanager.replace_image(view, image.permute(1, 2, 0))
            self.edited_views.add(view)
            written.append(view)
        self._schedule.mark_edited(len(written))
        return written

    def _record_progress(self, step: int) -> None:
        assert self._schedule is not None
        self.edit_controls.show_progress(self._schedule, len(self.edited_views), self.datamanager.num_views)
        writer.put_scalar("in2n/views_edited", self._schedule.views_edited, step)
        writer.put_scalar("in2n/passes_completed", self._schedule.passes_completed, step)

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        # The final checkpoint (saved just before AFTER_TRAIN) holds the edits in flight; nothing else needs them.
        return callbacks + [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], self.stop_edit_worker)]

    def stop_edit_worker(self, step: Optional[int] = None) -> None:
        """Drop the edits in flight and stop the worker thread (after the edit it is running, if any)."""
        self._discard_pending()
        if self._worker is not None:
            self._worker.close()

    def _discard_pending(self) -> None:
        for edit in self._pending:
            edit.result.cancel()  # queued ones never run; a running one finishes and is ignored
        self._pending = []

    @torch.no_grad()
    def render_view(self, view: int) -> Tensor:
        """Render training view `view` as the model sees it in training: its own learned pose correction and
        appearance code. Returns RGB [H, W, 3] in [0, 1]."""
        cameras = self.datamanager.train_dataset.cameras
        camera = cameras[view : view + 1].to(self.device)
        camera.metadata = {"cam_idx": view}
        camera.camera_to_worlds = self.model.camera_optimizer.apply_to_camera(camera)
        ray_bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
        ray_bundle.camera_indices = torch.full_like(ray_bundle.camera_indices, view)
        with own_view_rendering(self.model):
            outputs = self.model.get_outputs_for_camera_ray_bundle(ray_bundle)
        return outputs["rgb"].clamp(0.0, 1.0)

    def request_reset(self) -> None:
        """Reset before the next training step. The viewer calls this from its own thread, where changing the
        images and weights could tear a step that is running."""
        self._reset_requested.set()
        self.edit_controls.progress.value = "reset requested: applied before the next training step"

    def reset_edit(self) -> None:
        """Restore the original images, the schedule and the model weights the edit started from."""
        if self._schedule is None:
            return
        from in2n.schedule import EditSchedule

        self._discard_pending()
        self.datamanager.restore_originals()
        self._schedule = EditSchedule(self.datamanager.num_views, seed=self.config.seed)
        self.edited_views.clear()
        if self._initial_model_state is not None:
            self.model.load_state_dict(self._initial_model_state)
            restored = "original images and the model the edit started from restored"
        else:
            # A resumed run never saw the nerfacto weights its edit started from.
            restored = "original images restored; the model keeps its weights (this run resumed an edit)"
        self.edit_controls.show_progress(self._schedule, 0, self.datamanager.num_views)
        notice(f"edit reset: {restored}")

    def remember_initial_model(self) -> None:
        """Keep a CPU copy of the weights the edit starts from, for Reset."""
        self._initial_model_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def edit_state_dict(self) -> Dict[str, Any]:
        """What a checkpoint needs to continue the edit: edited views (as 8-bit images), the schedule, and the edits
        in flight (their renders and seeds: a resumed run edits them again and writes them at the same step)."""
        assert self._schedule is not None
        views = sorted(self.edited_views)
        return {
            "version": EDIT_STATE_VERSION,
            "prompt": self.edit_controls.prompt.value,
            "edit_start_step": self.edit_start_step,
            "image_sizes": [self.datamanager.image_size(v) for v in range(self.datamanager.num_views)],
            "schedule": self._schedule.state_dict(),
            "edited_views": views,
            "edited_images": [to_uint8(self.datamanager.current_rgb(v)) for v in views],
            "pending": [edit.state_dict() for edit in self._pending],
        }

    def load_edit_state_dict(self, state: Dict[str, Any]) -> None:
        assert self._schedule is not None
        self._schedule.load_state_dict(state["schedule"])
        self.edit_start_step = state["edit_start_step"]
        self.edited_views = set(state["edited_views"])
        for view, image in zip(state["edited_views"], state["edited_images"], strict=False):
            self.datamanager.replace_image(view, image.float() / 255.0)
        self._discard_pending()
        for entry in state.get("pending", []):
            request = EditRequest.from_state_dict(entry["request"], self._originals(entry["request"]["views"]))
            self._pending.append(PendingEdit(request, entry["due_step"], self._start_edit(request)))


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


def group_by_size(views: List[int], size_of) -> List[List[int]]:
    """Views batched together must share one image size."""
    groups: Dict[Any, List[int]] = {}
    for view in views:
        groups.setdefault(size_of(view), []).append(view)
    return list(groups.values())


def edit_seed(seed: int, step: int, view: int) -> int:
    """A seed for one view's edit at one step, independent of which other views share its batch."""
    digest = hashlib.blake2b(f"{seed}:{step}:{view}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def to_uint8(image: Tensor) -> Tensor:
    return (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
