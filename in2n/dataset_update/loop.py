"""The Iterative Dataset Update of Instruct-NeRF2NeRF, apart from nerfstudio's trainer.

Every `edit_rate` steps, `edit_count` views are taken in turn from an order shuffled once per pass; each is rendered
from the current scene (with its own camera correction and appearance code), edited towards the instruction,
conditioned on the original view, and written back into the training images. Rays keep being sampled from every view,
edited or not, so the scene converges to an edit that is consistent in 3D.

`EditLoop` owns everything about that: the schedule, the views edited so far, the step the edit started at, the edits
in flight on a worker thread, the snapshot Reset goes back to, the settings that can change live (prompt, guidance,
pause), the edit's progress and convergence, the region it is limited to, and the state a checkpoint keeps. It is
built from an editor, a function that renders a training view and the training images, and driven by
`before_step(step)`, so it runs without nerfstudio's trainer in unit tests.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Optional, Protocol, Tuple

# nerfstudio's writer and base_config import each other; importing the writer first fails.
import nerfstudio.configs.base_config  # noqa: F401
import torch
from nerfstudio.utils import writer
from torch import Tensor, nn

from in2n.console import notice, notice_once
from in2n.data.training_images import TrainingImages
from in2n.dataset_update.background import (
    ConcurrentEdits,
    EditRequest,
    EditWorker,
    PendingEdit,
    edits_run_concurrently,
    finished,
    raise_if_failed,
)
from in2n.dataset_update.progress import Convergence, EditProgress, ProgressCsv, ProgressRecord, psnr
from in2n.dataset_update.region import EditBox, EditMasks, EditRegion, blend, edit_region
from in2n.dataset_update.schedule import EditSchedule, ScheduledView
from in2n.dataset_update.state import EditState
from in2n.dataset_update.strips import log_edit_strips, strips_due
from in2n.editors.base import Editor, EditSettings, stratified_noise_level

DEFAULT_SETTINGS = EditSettings()


@dataclass
class ViewRender:
    """A training view rendered from the current scene."""

    rgb: Tensor
    """Colour [H, W, 3] in [0, 1]."""
    points: Optional[Tensor] = None
    """Each pixel's expected surface point [H, W, 3] in the frame the scene is trained in, when asked for."""


RenderView = Callable[[int, bool], ViewRender]
"""Renders training view i as the model sees it in training; with True, also its surface points."""
Perceptual = Callable[[Tensor, Tensor], Tensor]
"""A perceptual distance (LPIPS) between two batches of images [B, 3, H, W] in [0, 1]: [B]."""
EditScheduleName = Literal["views", "passes"]
"""When views are edited: a few at a time all along (Instruct-NeRF2NeRF), or all of them now and then
(Instruct-GS2GS)."""

EditResult = Tuple[EditRequest, Tensor]
"""An edit request and the images the editor made of it."""


class EditShare(Protocol):
    """The edits shared out among the processes of a run on several devices (in2n.distributed.Ranks)."""

    def agree(self, loop: EditLoop) -> None:
        """Give the loop the live settings and Reset request every process applies at this step."""

    def mine(self, groups: List[List[int]]) -> List[List[int]]:
        """This process's share of the batches of views due."""

    def gather(self, results: List[EditResult], groups: List[List[int]]) -> List[EditResult]:
        """Every process's edits, as the batches `groups`."""


@dataclass
class EditLoopConfig:
    """The options of the Iterative Dataset Update (`--pipeline.*`)."""

    prompt: str = "don't change the image"
    """The instruction, e.g. "give him a cowboy hat"."""
    guidance_scale: float = DEFAULT_SETTINGS.guidance_scale
    """Text guidance scale: higher follows the instruction more strongly."""
    image_guidance_scale: float = DEFAULT_SETTINGS.image_guidance_scale
    """Image guidance scale: higher stays closer to the original views."""
    diffusion_steps: int = DEFAULT_SETTINGS.diffusion_steps
    """DDIM steps per edit."""
    lower_bound: float = DEFAULT_SETTINGS.lower_bound
    """Lowest noise level an edit starts from, as a fraction of the diffusion process."""
    upper_bound: float = DEFAULT_SETTINGS.upper_bound
    """Highest noise level an edit starts from, as a fraction of the diffusion process."""
    scale_steps_with_noise: bool = DEFAULT_SETTINGS.scale_steps_with_noise
    """Run only the DDIM steps below each edit's noise level (img2img strength semantics): faster, not identical."""
    edit_schedule: EditScheduleName = "views"
    """views: every --pipeline.edit-rate steps, the next --pipeline.edit-count views (Instruct-NeRF2NeRF). passes: at
    the edit's first step and every --pipeline.pass-every steps after it, one pass that edits every view,
    --pipeline.edit-count views per diffusion call (Instruct-GS2GS)."""
    edit_rate: int = 10
    """Edit views every this many training steps (--pipeline.edit-schedule views). With edits beside training, an edit
    is written this many steps after its render (either schedule)."""
    edit_count: int = 1
    """Views edited each time, batched into one diffusion call; in a pass, views per diffusion call."""
    pass_every: int = 2500
    """Steps from one pass to the next (--pipeline.edit-schedule passes): the scene trains on each pass's edits for
    this many steps before every view is edited again."""
    seed: int = 0
    """Seeds the order of views and every edit's noise, so a run and its resume are reproducible."""
    concurrent_edits: ConcurrentEdits = "auto"
    """Edit on a worker thread while the NeRF keeps training. An edit requested at step s is then written at step
    s + edit_rate (waited for if unfinished), one edit interval later than without, so results do not depend on the
    devices' speed. auto: on when the editor has its own device (--pipeline.ip2p-device, e.g. cuda:1). on: also on a
    shared device, where the two take turns on it."""
    log_strips_every: int = 50
    """Log original | render | edited strips of the edited views to the logger (--vis) every this many edits (with
    --pipeline.edit-schedule passes: of every pass); 0: off."""
    stop_when_converged: bool = False
    """Stop the run once the edit has converged (see --pipeline.converge-tolerance), before --max-num-iterations. The
    final checkpoint is saved; resuming it edits further only if --max-num-iterations is raised."""
    min_passes: int = 5
    """Convergence is judged on the trend of the last this many full passes over the views (each view edited once per
    pass), so at least this many run first; counted anew when the prompt or guidance changes."""
    converge_tolerance: float = 0.1
    """The edit has converged when the agreement of its last --pipeline.min-passes full passes (PSNR between each
    view's render and its new edit, pooled over a pass) changes by less than this many dB per pass."""
    edit_box: Optional[EditBox] = None
    """Edit only what lies in this axis-aligned box, X0 Y0 Z0 X1 Y1 Z1, in the frame the run trained in (the viewer's
    and camera paths' frame); outside it the views keep their original images."""
    edit_masks: EditMasks = "none"
    """dataset: edit only inside the masks the dataset declares (mask_path in transforms.json; white is edited), and
    train on every pixel. none: edit whole views."""

    def edit_settings(self) -> EditSettings:
        """The settings of an edit, as the options give them (the loop replaces the guidance with its live values)."""
        return EditSettings(
            guidance_scale=self.guidance_scale,
            image_guidance_scale=self.image_guidance_scale,
            diffusion_steps=self.diffusion_steps,
            lower_bound=self.lower_bound,
            upper_bound=self.upper_bound,
            scale_steps_with_noise=self.scale_steps_with_noise,
        )


@dataclass
class EditTarget:
    """What the edit converges towards: the instruction and its guidance. The viewer may change it while the edit
    runs; a change starts the count towards convergence anew."""

    prompt: str
    """The instruction."""
    guidance_scale: float
    """Text guidance."""
    image_guidance_scale: float
    """Image guidance."""

    def target(self) -> EditTarget:
        return EditTarget(self.prompt, float(self.guidance_scale), float(self.image_guidance_scale))


@dataclass
class LiveSettings(EditTarget):
    """What may change while the edit runs (the viewer writes here); every edit request reads it anew."""

    paused: bool = False
    """No new edits while set; the NeRF keeps training and edits in flight are still written."""

    @classmethod
    def from_config(cls, config: EditLoopConfig) -> LiveSettings:
        return cls(config.prompt, config.guidance_scale, config.image_guidance_scale)


@dataclass
class EditSummary(EditTarget):
    """Where the edit stands, for the console, the viewer and the checkpoint of a finished run (as `as_state`)."""

    edits: int
    """Views edited so far, counting each edit of a view."""
    views_changed: int
    """Distinct views that hold an edited image."""
    num_views: int
    """Training views."""
    passes_completed: int
    """Full passes over the views."""
    position: int
    """Views edited in the current pass."""
    agreement: str
    """The edit's progress in words (see EditProgress.summary_text)."""

    def progress_text(self) -> str:
        return (
            f"{self.edits} edits, {self.views_changed}/{self.num_views} views changed, "
            f"pass {self.passes_completed + 1} ({self.position}/{self.num_views}); {self.agreement}"
        )

    def as_state(self) -> Dict[str, Any]:
        """Plain values, which torch's safe unpickler loads."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> EditSummary:
        """A summary a checkpoint holds; summaries without `position` and `agreement` (older checkpoints) read as at
        the start of a pass, agreement not recorded."""
        known = {f.name for f in fields(cls)}
        return cls(**{"position": 0, "agreement": "not recorded", **{k: v for k, v in state.items() if k in known}})


class EditLoop:
    """The Iterative Dataset Update of one training run.

    Args:
        config: the options.
        editor: edits renders towards the instruction.
        render: renders a training view from the current scene.
        images: the training images the edits are written into.
        model: the NeRF, whose weights at `start` Reset restores (None: Reset restores only the images).
        training_device: where the NeRF trains; with `concurrent_edits` auto, edits run beside training only when the
            editor has another device.
        perceptual: LPIPS between renders and edits, for the progress records (None: PSNR only).
    """

    def __init__(
        self,
        config: EditLoopConfig,
        editor: Editor,
        render: RenderView,
        images: TrainingImages,
        model: Optional[nn.Module] = None,
        training_device: str = "cpu",
        perceptual: Optional[Perceptual] = None,
    ) -> None:
        self.config = config
        self.editor = editor
        self.render = render
        self.images = images
        self.model = model
        self.perceptual = perceptual
        self.live = LiveSettings.from_config(config)
        self.schedule = EditSchedule(images.num_views, seed=config.seed)
        self.progress = self._new_progress()
        self.region: Optional[EditRegion] = edit_region(config.edit_box, config.edit_masks, images)
        self.edited_views: set[int] = set()
        self.start_step: Optional[int] = None
        """The step the edit began at (None until it begins)."""
        self.length: Optional[int] = None
        """The edit's length in steps, counted from `start_step` (--max-num-iterations; None: unbounded)."""
        self.stopped = False
        """Whether the edit stopped on convergence (and has not been given a longer length since)."""
        self.stopped_at_length: Optional[int] = None
        """The length under which it stopped (None: it did not stop, or it had no length)."""
        self._start_weights: Optional[Dict[str, Tensor]] = None
        concurrent = edits_run_concurrently(config.concurrent_edits, editor, training_device)
        self._worker = EditWorker(editor) if concurrent else None
        self._pending: List[PendingEdit] = []
        self._reset_requested = threading.Event()
        self._listeners: List[Callable[[EditSummary], None]] = []
        self._last_target = self.live.target()
        self._csv: Optional[ProgressCsv] = None
        self._region_seen = False
        self.share: Optional[EditShare] = None
        """Set on a run on several devices: each process edits its share of the views and writes all of them."""

    def describe(self) -> str:
        config = self.config
        if config.edit_schedule == "passes":
            extras = [f"every view edited every {config.pass_every} steps, {config.edit_count} per diffusion call"]
        else:
            extras = [f"{config.edit_count} view(s) edited every {config.edit_rate} steps"]
        extras += [self.region.describe()] if self.region is not None else []
        if self._worker is not None:
            extras.append(f"edits run beside training and are written {self.config.edit_rate} steps after their render")
        if self.config.stop_when_converged:
            extras.append(
                f"stops once the agreement's trend over {self.config.min_passes} full passes is within "
                f"{self.config.converge_tolerance:g} dB per pass"
            )
        return "; ".join([f"editing with {self.editor.describe()}; {self.images.num_views} training views", *extras])

    # ------------------------------------------------------------------------------------------------------------
    # Driving the loop.

    def begin(self, step: int, length: Optional[int] = None) -> None:
        """A new edit begins at `step` and runs `length` steps: remember both and, for Reset, the weights the model
        has now."""
        self.start_step = step
        self.length = length
        if self.model is not None:
            self._start_weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def before_step(self, step: int) -> None:
        """What happens before training step `step`: a requested Reset, the edits due, and new edits if due."""
        if self.share is not None:
            self.share.agree(self)
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self.reset()
        if self.start_step is None:
            self.begin(step)
        self.write_finished_edits(step)
        if self.edits_due(step) and not self.live.paused:
            self.edit_views(step)

    def edits_due(self, step: int) -> bool:
        """Whether views are edited at `step`: every edit_rate steps, or at the steps a pass begins."""
        if self.config.edit_schedule == "passes":
            start = step if self.start_step is None else self.start_step
            return (step - start) % self.config.pass_every == 0
        return step % self.config.edit_rate == 0

    def edit_views(self, step: int) -> List[int]:
        """Edit the next views of the schedule (edit_count of them, or a whole pass) and write them into the training
        images, edit_count per diffusion call; returns those written.

        With concurrent edits, the renders are handed to the worker thread instead and nothing is written now:
        `write_finished_edits` writes them at step + edit_rate.
        """
        count = self.images.num_views if self.config.edit_schedule == "passes" else self.config.edit_count
        scheduled = {s.view: s for s in self.schedule.next_scheduled(count)}
        self._follow_target([s.pass_index for s in scheduled.values()])
        groups = [
            group[start : start + self.config.edit_count]
            for group in group_by_size(list(scheduled), self.images.image_size)
            for start in range(0, len(group), self.config.edit_count)
        ]
        mine = groups if self.share is None else self.share.mine(groups)
        requests = [self._request_edit([scheduled[v] for v in views], step) for views in mine]
        if self._worker is not None:
            due_step = step + self.config.edit_rate
            self._pending += [PendingEdit(r, due_step, self._worker.submit(r)) for r in requests]
            return []
        results = [(request, request.run(self.editor)) for request in requests]
        if self.share is not None:
            results = self.share.gather(results, groups)
        written: List[int] = []
        for request, edited in results:
            written += self._write_edit(request, edited, step)
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
            written += self._write_edit(edit.request, edit.result.result(), step)
        self._record_progress(step)
        return written

    @property
    def pending_edits(self) -> List[PendingEdit]:
        """Edits handed to the worker thread and not yet written, oldest first."""
        return list(self._pending)

    @property
    def convergence(self) -> Optional[Convergence]:
        """The convergence the progress records show, if they show it."""
        return self.progress.convergence

    def steps_left(self, next_step: int) -> int:
        """Training steps the edit has left when `next_step` is the next to run: none once it ran its length, or
        once it stopped on convergence under a length not raised since (`resume` lifts the stop for a longer one)."""
        if self.stopped:
            return 0
        if self.start_step is None or self.length is None:
            raise RuntimeError("the edit has not begun, or has no length")
        return max(0, self.start_step + self.length - next_step)

    def stop_if_converged(self) -> Optional[Convergence]:
        """When the options say to stop a converged edit and it has converged, record the stop (a resumed run then
        edits further only under a longer length) and return the convergence; else None."""
        convergence = self.progress.convergence
        if not self.config.stop_when_converged or convergence is None or self.stopped:
            return None
        self.stopped, self.stopped_at_length = True, self.length
        return convergence

    def close(self) -> None:
        """Drop the edits in flight and stop the worker thread (after the edit it is running, if any)."""
        self._discard_pending()
        if self._worker is not None:
            self._worker.close()

    def log_progress_to(self, folder: Path) -> Path:
        """Write the progress records so far to folder/edit_progress.csv, and append every new one."""
        self._csv = ProgressCsv(folder / "edit_progress.csv")
        self._csv.write_all(self.progress.records)
        return self._csv.path

    # ------------------------------------------------------------------------------------------------------------
    # Live settings, Reset, progress.

    def settings(self) -> EditSettings:
        """The settings of the next edit: the options, with the guidance as it is live."""
        return replace(
            self.config.edit_settings(),
            guidance_scale=float(self.live.guidance_scale),
            image_guidance_scale=float(self.live.image_guidance_scale),
        )

    def request_reset(self) -> None:
        """Reset before the next training step. The viewer calls this from its own thread, where changing the images
        and weights could tear a step that is running."""
        self._reset_requested.set()

    @property
    def reset_requested(self) -> bool:
        return self._reset_requested.is_set()

    def reset(self) -> None:
        """Restore the original images, the schedule and the model weights the edit started from."""
        self._discard_pending()
        self.images.restore_originals()
        self.schedule = EditSchedule(self.images.num_views, seed=self.config.seed)
        self.progress = self._new_progress()
        if self._csv is not None:
            self._csv.write_all([])  # the file holds the edit the images hold: a new one
        self.edited_views.clear()
        if self._start_weights is not None and self.model is not None:
            self.model.load_state_dict(self._start_weights)
            restored = "original images and the model the edit started from restored"
        else:
            # A resumed run never saw the weights its edit started from.
            restored = "original images restored; the model keeps its weights (this run resumed an edit)"
        self._notify()
        notice(f"edit reset: {restored}")

    def summary(self) -> EditSummary:
        target = self.live.target()
        return EditSummary(
            prompt=target.prompt,
            guidance_scale=target.guidance_scale,
            image_guidance_scale=target.image_guidance_scale,
            edits=self.schedule.views_edited,
            views_changed=len(self.edited_views),
            num_views=self.images.num_views,
            passes_completed=self.schedule.passes_completed,
            position=self.schedule.position,
            agreement=self.progress.summary_text(),
        )

    def add_listener(self, listener: Callable[[EditSummary], None]) -> None:
        """Call `listener(summary)` whenever edits are written or the edit is reset."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoint state.

    def edit_state(self) -> EditState:
        """What a checkpoint needs to continue the edit: edited views (as 8-bit images), the schedule, the edits
        in flight (their renders and seeds: a resumed run edits them again and writes them at the same step), and the
        progress records."""
        return EditState(
            prompt=self.live.prompt,
            start_step=self.start_step,
            image_sizes=[self.images.image_size(v) for v in range(self.images.num_views)],
            schedule=self.schedule.state_dict(),
            edited_images={view: to_uint8(self.images.current_rgb(view)) for view in sorted(self.edited_views)},
            pending=[edit.state_dict() for edit in self._pending],
            progress=self.progress.state_dict(),
            stopped_at_length=self.stopped_at_length,
        )

    def resume(self, state: EditState, length: Optional[int] = None) -> None:
        """Continue the edit a checkpoint holds, for `length` steps from its start. An edit that stopped on
        convergence under a shorter length edits further, and its convergence is judged anew from the next pass."""
        self.schedule.load_state_dict(state.schedule)
        self.start_step = state.start_step
        self.length = length
        self.edited_views = set(state.edited_images)
        for view, image in state.edited_images.items():
            self.images.replace_image(view, image.float() / 255.0)
        if state.progress is not None:
            self.progress.load_state_dict(state.progress)
        self.stopped_at_length = state.stopped_at_length
        self.stopped = self.stopped_at_length is not None
        if self.stopped_at_length is not None and (length is None or length > self.stopped_at_length):
            self.stopped, self.stopped_at_length = False, None
            self.progress.restart(self.schedule.passes_completed)
        self._discard_pending()
        for entry in state.pending:
            saved = entry["request"]
            request = EditRequest.from_state_dict(
                saved, self._originals(saved["views"]), current_pass=self.schedule.passes_completed
            )
            self._pending.append(PendingEdit(request, entry["due_step"], self._start_edit(request)))
        self._notify()

    # ------------------------------------------------------------------------------------------------------------
    # Internals.

    def _request_edit(self, scheduled: List[ScheduledView], step: int) -> EditRequest:
        """Render the views now (the NeRF is only used on the training thread) and gather the edit's inputs."""
        views, passes = [s.view for s in scheduled], [s.pass_index for s in scheduled]
        settings = self.settings()
        seeds = [edit_seed(self.config.seed, step, view) for view in views]
        strata = self.images.num_views
        levels = [
            stratified_noise_level(settings, seed % strata if s.place is None else s.place, strata, seed)
            for s, seed in zip(scheduled, seeds, strict=True)
        ]
        with_points = self.region is not None and self.region.needs_points
        rendered = [self.render(view, with_points) for view in views]
        masks = None
        if self.region is not None:
            masks = torch.stack([self.region.mask(view, r.points) for view, r in zip(views, rendered, strict=True)])
        return EditRequest(
            step=step,
            views=views,
            renders=torch.stack([r.rgb for r in rendered]).permute(0, 3, 1, 2).cpu(),
            originals=self._originals(views),
            prompt=self.live.prompt,
            settings=settings,
            seeds=seeds,
            passes=passes,
            masks=masks,
            noise_levels=levels,
        )

    def _follow_target(self, passes: List[int]) -> None:
        """When the prompt or guidance changed since the last edit request, the edit converges towards something else:
        the passes of the views due now, and those before, count no more towards convergence."""
        if passes and self.live.target() != self._last_target:
            self._last_target = self.live.target()
            self.progress.restart(min(passes))

    def _start_edit(self, request: EditRequest):
        """On the worker thread if edits run concurrently, otherwise now, on this thread."""
        if self._worker is not None:
            return self._worker.submit(request)
        return finished(request.run(self.editor))

    def _originals(self, views: List[int]) -> Tensor:
        return torch.stack([self.images.original_rgb(view) for view in views]).permute(0, 3, 1, 2).cpu()

    def _write_edit(self, request: EditRequest, edited: Tensor, step: int) -> List[int]:
        """Write an edit's finite images (within the edit region) into the training images, and record how far each
        is from its render; queue the other views for a retry."""
        if self._strips_due(request.step):
            log_edit_strips(request.views, request.originals, request.renders, edited, request.step)
        written, records = [], []
        for i, view in enumerate(request.views):
            if not torch.isfinite(edited[i]).all():
                notice(
                    f"the edit of view {view} at step {request.step} was not finite (NaN/inf); kept its image, "
                    "will retry"
                )
                self.schedule.mark_failed(view)
                continue
            mask = None if request.masks is None else request.masks[i]
            image = blend(edited[i], request.originals[i], mask).clamp(0.0, 1.0)
            self.images.replace_image(view, image.permute(1, 2, 0))
            self.edited_views.add(view)
            written.append(view)
            level = -1 if request.noise_levels is None else request.noise_levels[i]
            records.append(self._progress_record(step, view, request.passes[i], level, request.renders[i], image))
            self._region_seen = self._region_seen or (mask is not None and bool(mask.max() > 0.5))
        self.schedule.mark_edited(len(written))
        for record in records:
            self.progress.add(record)
        if self._csv is not None and records:
            try:
                self._csv.append(records)
            except OSError as error:  # a full disk: the checkpoint keeps the records; a save will report it
                notice_once(
                    f"could not write {self._csv.path} ({error.strerror or error}); the checkpoints keep the records, "
                    "and a resumed run writes the file anew"
                )
        return written

    def _strips_due(self, step: int) -> bool:
        """Strips of every log_strips_every-th edit step; of every pass, whose edits are few and far between."""
        if self.config.edit_schedule == "passes":
            return self.config.log_strips_every > 0
        return strips_due(step, self.config.edit_rate, self.config.log_strips_every)

    def _progress_record(
        self, step: int, view: int, pass_index: int, noise_level: int, render: Tensor, image: Tensor
    ) -> ProgressRecord:
        lpips = math.nan
        if self.perceptual is not None:
            lpips = float(self.perceptual(render[None], image[None])[0])
        return ProgressRecord(step, view, pass_index, noise_level, psnr(render, image), lpips)

    def _record_progress(self, step: int) -> None:
        writer.put_scalar("in2n/views_edited", self.schedule.views_edited, step)
        writer.put_scalar("in2n/passes_completed", self.schedule.passes_completed, step)
        if self.progress.records:
            writer.put_scalar("in2n/agreement_psnr", self.progress.running_psnr(), step)
            if self.perceptual is not None:
                writer.put_scalar("in2n/agreement_lpips", self.progress.running_lpips(), step)
        completed = self.progress.pass_psnr
        if completed:
            writer.put_scalar("in2n/pass_agreement_psnr", completed[max(completed)], step)
        if self.region is not None and not self._region_seen and self.schedule.passes_completed >= 1:
            notice_once(
                f"{self.region.describe()}, but no view edited in a full pass saw anything inside the region: every "
                "view kept its original image. Check the region (the box is in the frame the viewer shows)."
            )
        self.progress.check(step)
        self._notify()

    def _new_progress(self) -> EditProgress:
        return EditProgress(self.images.num_views, self.config.min_passes, self.config.converge_tolerance)

    def _notify(self) -> None:
        summary = self.summary()
        for listener in self._listeners:
            listener(summary)

    def _discard_pending(self) -> None:
        for edit in self._pending:
            edit.result.cancel()  # queued ones never run; a running one finishes and is ignored
        self._pending = []


def group_by_size(views: List[int], size_of: Callable[[int], Any]) -> List[List[int]]:
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
