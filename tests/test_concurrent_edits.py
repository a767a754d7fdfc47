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

import in2n.editing.factory as factory
from in2n.background_edits import edits_run_concurrently
from in2n.checkpoints import atomic_save, load_checkpoint_file
from in2n.editing.base import Editor, EditSettings
from in2n.editing.reference import ReferenceEditor
from in2n.errors import In2nError
from in2n.pipeline import In2nPipeline, edit_seed
from in2n.schedule import EditSchedule
from tests.pipelines import make_pipeline

EDIT_RATE = 2
EDIT_COUNT = 2
GATE_TIMEOUT_S = 120
"""Only reached if training waits for an edit it should not wait for; the test then fails instead of hanging."""


class ObservedEditor(ReferenceEditor):
    """The reference editor, slowed down or held back on request, logging when each edit ends."""

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


class FailingEditor(ReferenceEditor):
    def edit(self, *args) -> Tensor:
        raise In2nError("InstructPix2Pix weights not found")


def concurrent_pipeline(scene: Path, monkeypatch, fake: Editor | None = None, **options) -> In2nPipeline:
    """A small pipeline editing on a worker thread, with `fake` as its editor if given."""
    if fake is not None:
        monkeypatch.setattr(factory, "build_editor", lambda config, default_device: fake)
    options = {"edit_rate": EDIT_RATE, "edit_count": EDIT_COUNT, "concurrent_edits": "on", **options}
    torch.manual_seed(0)  # model initialisation and ray sampling draw from the global generator
    return make_pipeline(scene, lite=True, **options)


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


def record_renders(pipeline: In2nPipeline) -> Dict[int, List[Tensor]]:
    """Every render taken for an edit, per view, in order."""
    renders: Dict[int, List[Tensor]] = {}
    render_view = pipeline.render_view

    def recording(view: int) -> Tensor:
        image = render_view(view)
        renders.setdefault(view, []).append(image.clone())
        return image

    pipeline.render_view = recording  # type: ignore[method-assign]
    return renders


def expected_edit(pipeline: In2nPipeline, views: List[int], renders: List[Tensor], step: int) -> Tensor:
    """What the editor makes of these renders with the seeds of `step`, as [B, H, W, 3]."""
    edited = pipeline.editor.edit(
        torch.stack(renders).permute(0, 3, 1, 2),
        torch.stack([pipeline.datamanager.original_rgb(v) for v in views]).permute(0, 3, 1, 2),
        views,
        pipeline.config.prompt,
        pipeline.edit_settings(),
        [edit_seed(pipeline.config.seed, step, v) for v in views],
    )
    return edited.permute(0, 2, 3, 1)


def changed_views(pipeline: In2nPipeline) -> List[int]:
    datamanager = pipeline.datamanager
    images, originals = datamanager.images, datamanager.original_images
    return [v for v in range(datamanager.num_views) if not torch.equal(images[v], originals[v])]


def test_auto_runs_concurrently_only_when_the_editor_has_a_device_of_its_own() -> None:
    class OnDevice(ReferenceEditor):
        def __init__(self, device: str) -> None:
            self.device = torch.device(device)

    assert edits_run_concurrently("auto", OnDevice("cuda:1"), "cuda:0")
    assert not edits_run_concurrently("auto", OnDevice("cuda:0"), "cuda:0")
    assert not edits_run_concurrently("auto", OnDevice("cpu"), "cpu")
    assert not edits_run_concurrently("auto", ReferenceEditor(), "cuda:0")  # computes wherever its inputs are
    assert edits_run_concurrently("on", ReferenceEditor(), "cpu")
    assert not edits_run_concurrently("off", OnDevice("cuda:1"), "cuda:0")


@pytest.mark.parametrize("editor", ["reference", "ip2p"])
def test_an_edit_requested_at_step_s_is_written_at_step_s_plus_edit_rate(
    scene: Path, tiny_ip2p: Path, monkeypatch, editor: str
) -> None:
    pipeline = concurrent_pipeline(scene, monkeypatch, editor=editor, ip2p_model=str(tiny_ip2p))
    renders = record_renders(pipeline)
    order = EditSchedule(pipeline.datamanager.num_views, seed=0)
    first, second = order.next_views(EDIT_COUNT), order.next_views(EDIT_COUNT)
    trainer = Trainer(pipeline)
    changed = []
    for step in range(2 * EDIT_RATE + 1):
        trainer.step(step)
        changed.append(changed_views(pipeline))  # what this step's rays were sampled from
    # Views requested at step 0 change at step 2, those requested at step 2 at step 4; nothing is written sooner.
    assert changed == [[], [], sorted(first), sorted(first), sorted(first + second)]
    images = pipeline.datamanager.images
    for views, step in ((first, 0), (second, EDIT_RATE)):
        taken = [renders[v][0] for v in views]
        torch.testing.assert_close(torch.stack([images[v] for v in views]), expected_edit(pipeline, views, taken, step),
                                   atol=1e-6, rtol=0)  # fmt: skip
    # Each render shows the model at the step it was requested (step 2's after two training steps).
    assert not torch.equal(pipeline.render_view(first[0]), renders[first[0]][0])
    assert pipeline.schedule.views_edited == 2 * EDIT_COUNT
    pipeline.stop_edit_worker()


def test_concurrent_runs_are_reproducible_whatever_the_editors_speed(scene: Path, monkeypatch) -> None:
    def run(delay_s: float) -> Tensor:
        pipeline = concurrent_pipeline(scene, monkeypatch, fake=ObservedEditor([], delay_s=delay_s))
        trainer = Trainer(pipeline)
        for step in range(3 * EDIT_RATE + 1):
            trainer.step(step)
        pipeline.stop_edit_worker()
        assert len(pipeline.edited_views) == 3 * EDIT_COUNT
        return pipeline.datamanager.images.clone()

    # Equal up to float rounding: the two threads share torch's CPU thread pool, which splits reductions
    # differently depending on what the other thread is doing.
    torch.testing.assert_close(run(delay_s=0.0), run(delay_s=1.0), atol=1e-5, rtol=0)


def test_training_continues_while_an_edit_is_pending(scene: Path, monkeypatch) -> None:
    events: List[str] = []
    gate = threading.Event()
    pipeline = concurrent_pipeline(scene, monkeypatch, fake=ObservedEditor(events, gate=gate))
    trainer = Trainer(pipeline, events)
    first = pipeline.schedule.order[:EDIT_COUNT]
    for step in range(EDIT_RATE):
        trainer.step(step)
    [pending] = pipeline.pending_edits
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
    assert pipeline.pending_edits == []
    assert not any(t.name == "in2n-edits" and t.is_alive() for t in threading.enumerate())


def test_an_error_in_the_worker_is_raised_on_the_training_thread(scene: Path, monkeypatch) -> None:
    pipeline = concurrent_pipeline(scene, monkeypatch, fake=FailingEditor())
    assert pipeline.edit_views(step=0) == []
    with pytest.raises(In2nError, match="weights not found") as raised:
        pipeline.write_finished_edits(step=EDIT_RATE)
    assert any(entry.name == "edit" for entry in raised.traceback), "the worker's traceback is kept"
    pipeline.stop_edit_worker()


def test_a_checkpoint_taken_while_an_edit_is_in_flight_resumes_it(scene: Path, monkeypatch, tmp_path: Path) -> None:
    gate = threading.Event()
    pipeline = concurrent_pipeline(scene, monkeypatch, fake=ObservedEditor([], gate=gate))
    views = pipeline.schedule.order[:EDIT_COUNT]
    pipeline.edit_views(step=0)
    # Saving does not wait for the worker: the checkpoint holds the request (renders, seeds, settings).
    atomic_save({"pipeline": {}, "step": 1, "in2n": pipeline.edit_state_dict()}, tmp_path / "step-1.ckpt", tmp_path)
    state = load_checkpoint_file(tmp_path / "step-1.ckpt")["in2n"]  # torch's safe unpickler, as resuming uses
    assert [entry["request"]["views"] for entry in state["pending"]] == [views]
    assert state["edited_views"] == [] and not pipeline.pending_edits[0].result.done()
    gate.set()
    assert pipeline.write_finished_edits(step=EDIT_RATE) == views

    for mode in ("on", "off"):
        resumed = concurrent_pipeline(scene, monkeypatch, fake=ReferenceEditor(), concurrent_edits=mode)
        resumed.load_edit_state_dict(state)
        assert resumed.write_finished_edits(step=EDIT_RATE - 1) == []
        assert resumed.write_finished_edits(step=EDIT_RATE) == views
        assert changed_views(resumed) == sorted(views)
        assert torch.equal(resumed.datamanager.images, pipeline.datamanager.images), mode
        assert resumed.schedule.state_dict() == pipeline.schedule.state_dict()
        resumed.stop_edit_worker()

    # Reset while an edit is in flight: its result is dropped, the originals stay.
    gate.clear()
    pipeline.edit_views(step=EDIT_RATE)
    pipeline.edit_controls.reset.cb_hook(pipeline.edit_controls.reset)
    pipeline.get_train_loss_dict(step=EDIT_RATE + 1)  # resets first
    gate.set()
    assert pipeline.pending_edits == [] and pipeline.write_finished_edits(step=2 * EDIT_RATE) == []
    assert torch.equal(pipeline.datamanager.images, pipeline.datamanager.original_images)
    pipeline.stop_edit_worker()


def test_paused_edits_still_write_the_edit_in_flight(scene: Path, monkeypatch) -> None:
    pipeline = concurrent_pipeline(scene, monkeypatch, fake=ReferenceEditor(), edit_rate=1)
    pipeline.edit_views(step=0)
    pipeline.edit_controls.pause_edits.value = True
    pipeline.get_train_loss_dict(step=1)
    assert len(changed_views(pipeline)) == EDIT_COUNT and pipeline.pending_edits == []
    pipeline.stop_edit_worker()


def test_a_non_finite_concurrent_edit_is_retried_at_the_next_request(scene: Path, monkeypatch) -> None:
    class NonFinite(ReferenceEditor):
        def edit(self, renders: Tensor, originals: Tensor, views, prompt: str, settings: EditSettings, seeds):
            return super().edit(renders, originals, views, prompt, settings, seeds) * torch.nan

    pipeline = concurrent_pipeline(scene, monkeypatch, fake=NonFinite())
    views = pipeline.schedule.order[:EDIT_COUNT]
    pipeline.edit_views(step=0)
    assert pipeline.write_finished_edits(step=EDIT_RATE) == []
    assert pipeline.schedule.retry == views and changed_views(pipeline) == []
    pipeline.stop_edit_worker()
