"""Edits on a worker thread beside training (--pipeline.concurrent-edits): when they are written, determinism,
errors, checkpoints, reset and shutdown. Both the training and the editor's device are the CPU here."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List, Sequence

import pytest
import torch
from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor

from in2n.dataset_update.background import edits_run_concurrently
from in2n.dataset_update.loop import edit_seed
from in2n.dataset_update.schedule import EditSchedule
from in2n.dataset_update.state import EDIT_STATE_KEY, EditState
from in2n.editors.base import Editor, EditSettings, stratified_noise_level
from in2n.editors.ip2p import InstructPix2PixEditor
from in2n.editors.negative import NegativeEditor
from in2n.errors import In2nError
from in2n.pipeline import In2nPipeline
from in2n.runs.checkpoints import atomic_save, load_checkpoint_file
from tests.pipelines import make_pipeline, panel

EDIT_RATE = 2
EDIT_COUNT = 2
GATE_TIMEOUT_S = 120
"""Only reached if training waits for an edit it should not wait for; the test then fails instead of hanging."""


class ObservedEditor(NegativeEditor):
    """The negative editor, slowed down or held back on request, logging when each edit ends."""

    def __init__(self, events: List[str], delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.events = events
        self.delay_s = delay_s
        self.gate = gate

    def edit(self, renders: Tensor, originals: Tensor, views: Sequence[int], *args) -> Tensor:
        if self.gate is not None and not self.gate.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the edit was never released: training waited for it")
        time.sleep(self.delay_s)
        self.events.append(f"edited {list(views)}")
        return super().edit(renders, originals, views, *args)


class FailingEditor(NegativeEditor):
    def edit(self, *args) -> Tensor:
        raise In2nError("InstructPix2Pix weights not found")


def concurrent_pipeline(scene: Path, fake: Editor | None = None, **options) -> In2nPipeline:
    """A small pipeline editing on a worker thread, with `fake` as its editor if given."""
    options = {"edit_rate": EDIT_RATE, "edit_count": EDIT_COUNT, "concurrent_edits": "on", **options}
    torch.manual_seed(0)  # model initialisation and ray sampling draw from the global generator
    return make_pipeline(scene, lite=True, with_editor=fake, **options)


class Trainer:
    """The training loop's part that matters here: loss, backward, optimiser step."""

    def __init__(self, pipeline: In2nPipeline, events: List[str] | None = None) -> None:
        self.pipeline = pipeline
        self.events = events if events is not None else []
        parameters = [p for group in pipeline.get_param_groups().values() for p in group]
        self.optimizer = torch.optim.Adam(parameters, lr=1e-2)

    def step(self, step: int) -> None:
        _, losses, _ = self.pipeline.get_train_loss_dict(step)
        sum(losses.values()).backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.events.append(f"trained step {step}")


class RecordingEditor(Editor):
    """Another editor, recording the renders each view's edits receive, per view, in order, and each edit's noise
    levels."""

    def __init__(self, inner: Editor) -> None:
        self.inner = inner
        self.renders: Dict[int, List[Tensor]] = {}
        self.noise_levels: Dict[int, List[int]] = {}

    def edit(self, renders, originals, views, prompt, settings, seeds, noise_levels=None) -> Tensor:
        for view, render, level in zip(views, renders, noise_levels, strict=True):
            self.renders.setdefault(view, []).append(render.permute(1, 2, 0).clone())
            self.noise_levels.setdefault(view, []).append(level)
        return self.inner.edit(renders, originals, views, prompt, settings, seeds, noise_levels)


def expected_edit(
    pipeline: In2nPipeline, views: List[int], renders: List[Tensor], step: int, places: List[int]
) -> Tensor:
    """What the editor makes of these renders with the seeds of `step`, the views at these places of their pass
    (their noise levels' strata), as [B, H, W, 3]."""
    seeds = [edit_seed(pipeline.config.seed, step, v) for v in views]
    settings = pipeline.edit_loop.settings()
    strata = pipeline.datamanager.num_views
    levels = [stratified_noise_level(settings, place, strata, seed) for place, seed in zip(places, seeds, strict=True)]
    edited = pipeline.edit_loop.editor.edit(
        torch.stack(renders).permute(0, 3, 1, 2),
        torch.stack([pipeline.datamanager.training_images.original_rgb(v) for v in views]).permute(0, 3, 1, 2),
        views, pipeline.config.prompt, settings, seeds, levels,
    )  # fmt: skip
    return edited.permute(0, 2, 3, 1)


def changed_views(pipeline: In2nPipeline) -> List[int]:
    datamanager = pipeline.datamanager
    images, originals = datamanager.training_images.rows, datamanager.training_images.originals
    return [v for v in range(datamanager.num_views) if not torch.equal(images[v], originals[v])]


def test_auto_runs_concurrently_only_when_the_editor_has_a_device_of_its_own() -> None:
    class OnDevice(NegativeEditor):
        def __init__(self, device: str) -> None:
            self.device = torch.device(device)

    assert edits_run_concurrently("auto", OnDevice("cuda:1"), "cuda:0")
    assert not edits_run_concurrently("auto", OnDevice("cuda:0"), "cuda:0")
    assert not edits_run_concurrently("auto", OnDevice("cpu"), "cpu")
    assert not edits_run_concurrently("auto", NegativeEditor(), "cuda:0")  # computes wherever its inputs are
    assert edits_run_concurrently("on", NegativeEditor(), "cpu")
    assert not edits_run_concurrently("off", OnDevice("cuda:1"), "cuda:0")


@pytest.mark.parametrize("editor", ["negative", "ip2p"])
def test_an_edit_requested_at_step_s_is_written_at_step_s_plus_edit_rate(
    scene: Path, tiny_ip2p: Path, editor: str
) -> None:
    inner = NegativeEditor() if editor == "negative" else InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))
    recording = RecordingEditor(inner)
    pipeline = concurrent_pipeline(scene, fake=recording)
    order = EditSchedule(pipeline.datamanager.num_views, seed=0)
    requested = {0: order.next_views(EDIT_COUNT), EDIT_RATE: order.next_views(EDIT_COUNT)}
    first, second = requested.values()
    trainer = Trainer(pipeline)
    changed, renders_before = [], {}
    for step in range(2 * EDIT_RATE + 1):
        for view in requested.get(step, []):
            renders_before[view] = pipeline.render_view(view)  # the model as the step's edit request sees it
        trainer.step(step)
        changed.append(changed_views(pipeline))  # what this step's rays were sampled from
    # Views requested at step 0 change at step 2, those requested at step 2 at step 4; nothing is written sooner.
    assert changed == [[], [], sorted(first), sorted(first), sorted(first + second)]
    images = pipeline.datamanager.training_images.rows
    for (step, views), places in zip(requested.items(), ([0, 1], [2, 3]), strict=True):
        taken = [recording.renders[v][0] for v in views]
        # Each edit received the render of the model as it was when the edit was requested.
        torch.testing.assert_close(torch.stack(taken), torch.stack([renders_before[v] for v in views]))
        written = torch.stack([images[v] for v in views])
        torch.testing.assert_close(written, expected_edit(pipeline, views, taken, step, places), atol=1e-6, rtol=0)
    # Step 2's render differs from step 0's: the model trained in between.
    assert not torch.equal(pipeline.render_view(first[0]), recording.renders[first[0]][0])
    assert pipeline.edit_loop.schedule.views_edited == 2 * EDIT_COUNT
    pipeline.stop_edits()


def test_concurrent_runs_are_reproducible_whatever_the_editors_speed(scene: Path) -> None:
    def run(delay_s: float) -> Tensor:
        pipeline = concurrent_pipeline(scene, fake=ObservedEditor([], delay_s=delay_s))
        trainer = Trainer(pipeline)
        for step in range(3 * EDIT_RATE + 1):
            trainer.step(step)
        pipeline.stop_edits()
        assert len(pipeline.edit_loop.edited_views) == 3 * EDIT_COUNT
        return pipeline.datamanager.training_images.rows.clone()

    # Equal up to float rounding: the two threads share torch's CPU thread pool, which splits reductions
    # differently depending on what the other thread is doing.
    torch.testing.assert_close(run(delay_s=0.0), run(delay_s=1.0), atol=1e-5, rtol=0)


def test_training_continues_while_an_edit_is_pending(scene: Path) -> None:
    events: List[str] = []
    gate = threading.Event()
    pipeline = concurrent_pipeline(scene, fake=ObservedEditor(events, gate=gate))
    trainer = Trainer(pipeline, events)
    first = pipeline.edit_loop.schedule.order[:EDIT_COUNT]
    for step in range(EDIT_RATE):
        trainer.step(step)
    [pending] = pipeline.edit_loop.pending_edits
    assert not pending.result.done() and changed_views(pipeline) == []
    assert any(t.name == "in2n-edits" and t.is_alive() for t in threading.enumerate())
    gate.set()
    trainer.step(EDIT_RATE)
    # Step 2 waits for the first edit; the second one (requested at step 2) may finish before or after it trains.
    assert events[:3] == ["trained step 0", "trained step 1", f"edited {first}"] and "trained step 2" in events
    assert changed_views(pipeline) == sorted(first)

    # nerfstudio's trainer runs the AFTER_TRAIN callbacks once the final checkpoint is saved: the worker stops.
    callbacks = pipeline.get_training_callbacks(TrainingCallbackAttributes(None, None, pipeline, None))
    for callback in callbacks:
        callback.run_callback_at_location(EDIT_RATE, TrainingCallbackLocation.AFTER_TRAIN)
    assert pipeline.edit_loop.pending_edits == []
    assert not any(t.name == "in2n-edits" and t.is_alive() for t in threading.enumerate())


def test_an_error_in_the_worker_is_raised_on_the_training_thread(scene: Path) -> None:
    pipeline = concurrent_pipeline(scene, fake=FailingEditor())
    assert pipeline.edit_loop.edit_views(step=0) == []
    with pytest.raises(In2nError, match="weights not found") as raised:
        pipeline.edit_loop.write_finished_edits(step=EDIT_RATE)
    assert any(entry.name == "edit" for entry in raised.traceback), "the worker's traceback is kept"
    pipeline.stop_edits()


def test_a_checkpoint_taken_while_an_edit_is_in_flight_resumes_it(scene: Path, tmp_path: Path) -> None:
    gate = threading.Event()
    pipeline = concurrent_pipeline(scene, fake=ObservedEditor([], gate=gate))
    views = pipeline.edit_loop.schedule.order[:EDIT_COUNT]
    pipeline.edit_loop.edit_views(step=0)
    # Saving does not wait for the worker: the checkpoint holds the request (renders, seeds, settings).
    atomic_save(
        {"pipeline": {}, "step": 1, EDIT_STATE_KEY: pipeline.edit_loop.edit_state().to_dict()},
        tmp_path / "step-1.ckpt",
        tmp_path,
    )
    state = EditState.of_checkpoint(load_checkpoint_file(tmp_path / "step-1.ckpt"))  # the safe unpickler, as resuming
    assert state is not None
    assert [entry["request"]["views"] for entry in state.pending] == [views]
    assert state.edited_views == [] and not pipeline.edit_loop.pending_edits[0].result.done()
    gate.set()
    assert pipeline.edit_loop.write_finished_edits(step=EDIT_RATE) == views

    for mode in ("on", "off"):
        resumed = concurrent_pipeline(scene, fake=NegativeEditor(), concurrent_edits=mode)
        resumed.edit_loop.resume(state)
        assert resumed.edit_loop.write_finished_edits(step=EDIT_RATE - 1) == []
        assert resumed.edit_loop.write_finished_edits(step=EDIT_RATE) == views
        assert changed_views(resumed) == sorted(views)
        assert torch.equal(resumed.datamanager.training_images.rows, pipeline.datamanager.training_images.rows), mode
        assert resumed.edit_loop.schedule.state_dict() == pipeline.edit_loop.schedule.state_dict()
        resumed.stop_edits()

    # Reset while an edit is in flight: its result is dropped, the originals stay.
    gate.clear()
    pipeline.edit_loop.edit_views(step=EDIT_RATE)
    panel(pipeline).reset.cb_hook(panel(pipeline).reset)
    pipeline.get_train_loss_dict(step=EDIT_RATE + 1)  # resets first
    gate.set()
    assert pipeline.edit_loop.pending_edits == [] and pipeline.edit_loop.write_finished_edits(step=2 * EDIT_RATE) == []
    assert torch.equal(pipeline.datamanager.training_images.rows, pipeline.datamanager.training_images.originals)
    pipeline.stop_edits()


def test_paused_edits_still_write_the_edit_in_flight(scene: Path) -> None:
    pipeline = concurrent_pipeline(scene, fake=NegativeEditor(), edit_rate=1)
    pipeline.edit_loop.edit_views(step=0)
    pipeline.edit_loop.live.paused = True
    pipeline.get_train_loss_dict(step=1)
    assert len(changed_views(pipeline)) == EDIT_COUNT and pipeline.edit_loop.pending_edits == []
    pipeline.stop_edits()


def test_a_non_finite_concurrent_edit_is_retried_at_the_next_request(scene: Path) -> None:
    class NonFinite(NegativeEditor):
        def edit(self, renders: Tensor, originals: Tensor, views, prompt: str, settings: EditSettings, *rest):
            return super().edit(renders, originals, views, prompt, settings, *rest) * torch.nan

    pipeline = concurrent_pipeline(scene, fake=NonFinite())
    views = pipeline.edit_loop.schedule.order[:EDIT_COUNT]
    pipeline.edit_loop.edit_views(step=0)
    assert pipeline.edit_loop.write_finished_edits(step=EDIT_RATE) == []
    assert pipeline.edit_loop.schedule.retry == views and changed_views(pipeline) == []
    pipeline.stop_edits()
