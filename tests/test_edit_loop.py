"""The edit loop (the Iterative Dataset Update) driven on its own: schedule, write-back, retries, live settings,
Reset, and its checkpoint state, including a state written by the previous release."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import List, Sequence, Tuple

import pytest
import torch
from torch import Tensor, nn

from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, EditLoopConfig, EditSummary, ViewRender, edit_seed, group_by_size
from in2n.dataset_update.schedule import EditSchedule
from in2n.dataset_update.state import EDIT_STATE_VERSION, EditState, EditStateError
from in2n.editors.base import Editor, EditSettings
from in2n.editors.ip2p import InstructPix2PixEditor
from in2n.editors.negative import NegativeEditor
from in2n.synthetic.scene import SceneConfig, write_scene
from tests.pipelines import make_pipeline

FIXTURES = Path(__file__).parent / "fixtures"
V2_STATE = FIXTURES / "edit_state_v2.pt"
"""An edit state as the previous release saved it (format version 2): `pipeline.edit_state_dict()` of a concurrent
in2n-lite run with the negative (then "reference") editor on V2_SCENE, edit_rate 2, edit_count 2, prompt
"make it gold", started at step 100 and saved before step 105, with the edit requested at step 104 in flight."""
V2_SCENE = SceneConfig(num_views=8, width=24, height=16, seed=0)
NUM_VIEWS, HEIGHT, WIDTH = 6, 8, 10


class RecordingEditor(NegativeEditor):
    """The negative editor, remembering the prompt and settings of every edit; optionally held back by a gate."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: List[Tuple[str, EditSettings]] = []
        self.gate = gate

    def edit(self, renders: Tensor, originals: Tensor, views: Sequence[int], prompt: str, settings, *rest) -> Tensor:
        if self.gate is not None:
            assert self.gate.wait(60), "the edit was never released"
        self.calls.append((prompt, settings))
        return super().edit(renders, originals, views, prompt, settings, *rest)


class NonFiniteOnce(NegativeEditor):
    """Gives NaN images on its first edit, then edits as the negative editor."""

    def __init__(self) -> None:
        self.failed = False

    def edit(self, renders: Tensor, *args) -> Tensor:
        edited = super().edit(renders, *args)
        if not self.failed:
            self.failed = True
            return edited * torch.nan
        return edited


def make_loop(editor: Editor, model: nn.Module | None = None, **options) -> EditLoop:
    """A loop over random training images whose render of view i is a fixed random image."""
    generator = torch.Generator().manual_seed(0)
    images = TrainingImages(torch.rand(NUM_VIEWS, HEIGHT, WIDTH, 3, generator=generator))
    renders = torch.rand(NUM_VIEWS, HEIGHT, WIDTH, 3, generator=generator)
    config = EditLoopConfig(**{"edit_rate": 1, "edit_count": 2, **options})
    return EditLoop(config, editor, lambda view, with_points: ViewRender(renders[view]), images, model=model)


def changed(loop: EditLoop) -> List[int]:
    images = loop.images
    return [v for v in range(images.num_views) if not torch.equal(images.rows[v], images.originals[v])]


def test_schedule_edits_every_view_once_per_pass() -> None:
    schedule = EditSchedule(7, seed=3)
    sequence = []
    while len(sequence) < 21:
        views = schedule.next_views(3)
        assert 1 <= len(views) <= 3 and len(set(views)) == len(views)
        sequence += views
    for start in (0, 7, 14):
        assert sorted(sequence[start : start + 7]) == list(range(7))
    assert schedule.passes_completed == 2
    assert EditSchedule(7, seed=3).next_views(7) == EditSchedule(7, seed=3).next_views(7)
    assert EditSchedule(7, seed=3).next_views(7) != EditSchedule(7, seed=4).next_views(7)


def test_schedule_orders_differ_per_pass_and_failed_views_come_back_first() -> None:
    schedule = EditSchedule(6, seed=0)
    first = schedule.next_views(6)
    second = schedule.next_views(6)
    assert sorted(first) == sorted(second) == list(range(6)) and first != second
    schedule.mark_failed(4)
    assert schedule.next_views(2)[0] == 4
    state = schedule.state_dict()
    restored = EditSchedule(6)
    restored.load_state_dict(state)
    assert restored.next_views(6) == schedule.next_views(6)


def test_an_edit_step_writes_the_scheduled_views_and_keeps_the_originals() -> None:
    loop = make_loop(NegativeEditor(), edit_rate=3)
    originals = loop.images.originals.clone()
    expected = EditSchedule(NUM_VIEWS, seed=0).next_views(2)
    for step in (1, 2):
        loop.before_step(step)
    assert changed(loop) == [], "no edit before a multiple of the edit rate"
    loop.before_step(3)
    assert changed(loop) == sorted(expected) and loop.edited_views == set(expected)
    assert torch.equal(loop.images.originals, originals)
    assert loop.schedule.views_edited == 2 and loop.start_step == 1


def test_a_non_finite_edit_keeps_the_image_and_retries_the_view(capsys) -> None:
    loop = make_loop(NonFiniteOnce())
    views = EditSchedule(NUM_VIEWS, seed=0).next_views(2)
    assert loop.edit_views(step=0) == []
    assert changed(loop) == [] and loop.schedule.retry == views
    assert "was not finite" in " ".join(capsys.readouterr().out.split())
    assert loop.edit_views(step=1) == views


def test_live_settings_reach_the_next_edit_and_leave_the_edit_in_flight_unchanged() -> None:
    gate = threading.Event()
    editor = RecordingEditor(gate)
    loop = make_loop(editor, prompt="first", concurrent_edits="on", edit_rate=2)
    loop.before_step(0)  # requested with the options' prompt and guidance; held back by the gate
    loop.live.prompt, loop.live.guidance_scale, loop.live.image_guidance_scale = "second", 3.0, 0.5
    gate.set()
    loop.before_step(2)  # writes the first edit, requests the second
    loop.before_step(4)
    loop.close()
    (first_prompt, first), (second_prompt, second) = editor.calls
    assert (first_prompt, first.guidance_scale, first.image_guidance_scale) == ("first", 7.5, 1.5)
    assert (second_prompt, second.guidance_scale, second.image_guidance_scale) == ("second", 3.0, 0.5)
    assert second.diffusion_steps == first.diffusion_steps == loop.config.diffusion_steps


def test_a_new_prompt_is_encoded_once(tiny_ip2p: Path) -> None:
    ip2p = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))
    encoded: List[int] = []
    ip2p.text_encoder.register_forward_hook(lambda module, args, output: encoded.append(args[0].shape[0]))
    loop = make_loop(ip2p, prompt="first", diffusion_steps=2)
    loop.before_step(0)
    loop.live.prompt = "second"
    for step in (1, 2, 3):
        loop.before_step(step)
    assert len(encoded) == 2, "one text-encoder call per distinct prompt"
    assert ip2p._prompt is not None and ip2p._prompt[0] == "second"


def test_an_edit_whose_prompt_keeps_changing_does_not_converge() -> None:
    # Every step edits a whole pass, and any trend counts as flat: only a change of the edit holds the stop back.
    options = dict(edit_count=NUM_VIEWS, stop_when_converged=True, min_passes=2, converge_tolerance=100.0)
    steady, changing = make_loop(NegativeEditor(), **options), make_loop(NegativeEditor(), **options)
    for step in range(6):
        steady.before_step(step)
        changing.live.prompt = f"make it colour {step}"  # as typed in the viewer, once a pass
        changing.before_step(step)
    converged = steady.stop_if_converged()
    assert converged is not None and converged.step == 2, "passes 1 and 2 are complete at step 2"
    assert steady.stop_if_converged() is None, "the stop is recorded once"
    assert changing.stop_if_converged() is None and changing.convergence is None


def test_the_loop_says_how_many_steps_the_edit_has_left_and_a_longer_edit_lifts_a_convergence_stop() -> None:
    options = dict(edit_count=NUM_VIEWS, stop_when_converged=True, min_passes=2, converge_tolerance=100.0)
    loop = make_loop(NegativeEditor(), **options)
    loop.begin(100, length=50)
    assert [loop.steps_left(step) for step in (100, 120, 150, 170)] == [50, 30, 0, 0]
    for step in range(100, 103):
        loop.before_step(step)
    assert loop.stop_if_converged() is not None and loop.stopped_at_length == 50
    assert loop.steps_left(103) == 0, "a converged edit has no step left under its length"
    state = loop.edit_state()
    for length, left in ((50, 0), (60, 57)):
        resumed = make_loop(NegativeEditor(), **options)
        resumed.resume(state, length=length)
        assert resumed.steps_left(103) == left, length
        assert (resumed.stopped_at_length is None) is (length > 50)
    # A longer edit judges convergence anew: from the next pass on.
    assert resumed.convergence is None


def test_pausing_stops_new_edits_only() -> None:
    loop = make_loop(NegativeEditor())
    loop.before_step(0)
    loop.live.paused = True
    loop.before_step(1)
    assert loop.schedule.views_edited == 2
    loop.live.paused = False
    loop.before_step(2)
    assert loop.schedule.views_edited == 4


def test_reset_restores_images_schedule_and_the_models_weights_at_the_start() -> None:
    model = nn.Linear(3, 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    loop = make_loop(NegativeEditor(), model=model)
    seen = []
    loop.add_listener(lambda summary: seen.append(summary.edits))
    loop.before_step(0)  # starts the edit: the weights are remembered
    with torch.no_grad():
        model.weight.add_(1.0)
    loop.request_reset()  # from the viewer's thread: only a request
    assert loop.edited_views and loop.reset_requested
    loop.before_step(1)  # the training thread resets first, then edits anew
    assert loop.schedule.views_edited == 2 and changed(loop) == sorted(EditSchedule(NUM_VIEWS, seed=0).next_views(2))
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert seen == [2, 0, 2]


def test_the_state_round_trips_through_a_fresh_loop() -> None:
    loop = make_loop(NegativeEditor(), edit_count=4)
    for step in range(2):
        loop.before_step(step)
    saved = loop.edit_state().to_dict()
    assert saved["version"] == EDIT_STATE_VERSION
    assert all(image.dtype == torch.uint8 for image in saved["edited_images"])
    state = EditState.from_dict(saved)
    assert state.num_views == NUM_VIEWS and state.edited_views == sorted(loop.edited_views)
    fresh = make_loop(NegativeEditor(), edit_count=4)
    fresh.resume(state)
    assert fresh.edited_views == loop.edited_views and fresh.start_step == 0
    for view in loop.edited_views:
        torch.testing.assert_close(
            fresh.images.current_rgb(view), loop.images.current_rgb(view), atol=0.5 / 255 + 1e-6, rtol=0
        )
    assert fresh.schedule.next_views(4) == loop.schedule.next_views(4)


def test_an_edit_state_saved_by_the_previous_release_resumes(tmp_path: Path) -> None:
    write_scene(tmp_path, V2_SCENE)
    state = torch.load(V2_STATE, weights_only=True)
    assert state["version"] == 2
    pipeline = make_pipeline(tmp_path, lite=True, edit_rate=2, edit_count=2, prompt="make it gold")
    loop, images = pipeline.edit_loop, pipeline.datamanager.training_images
    loop.resume(EditState.from_dict(state))
    assert loop.start_step == 100 and loop.live.prompt == "make it gold"
    assert sorted(loop.edited_views) == state["edited_views"] == [0, 3, 4, 7]
    for view, image in zip(state["edited_views"], state["edited_images"], strict=True):
        assert torch.equal(images.current_rgb(view), image.float() / 255.0)
    assert loop.schedule.state_dict() == state["schedule"]
    # The edit in flight is made again from its saved renders and seeds and written at its step.
    [pending] = state["pending"]
    request = pending["request"]
    assert loop.write_finished_edits(pending["due_step"] - 1) == []
    assert loop.write_finished_edits(pending["due_step"]) == request["views"] == [2, 5]
    originals = torch.stack([images.original_rgb(v) for v in request["views"]]).permute(0, 3, 1, 2)
    expected = NegativeEditor().edit(
        request["renders"], originals, request["views"], request["prompt"], EditSettings(**request["settings"]),
        request["seeds"],
    )  # fmt: skip
    for view, image in zip(request["views"], expected, strict=True):
        torch.testing.assert_close(images.current_rgb(view), image.permute(1, 2, 0))
    assert request["seeds"] == [edit_seed(0, 104, view) for view in request["views"]]


def test_a_state_from_a_newer_release_is_refused() -> None:
    state = make_loop(NegativeEditor()).edit_state().to_dict()
    with pytest.raises(EditStateError, match=f"version {EDIT_STATE_VERSION + 1}; this in2n reads up to"):
        EditState.from_dict({**state, "version": EDIT_STATE_VERSION + 1})
    assert EditState.of_checkpoint({"pipeline": {}, "step": 1}) is None, "a nerfacto checkpoint holds no edit"


def test_the_summary_round_trips_through_a_checkpoint_and_reads_older_ones() -> None:
    loop = make_loop(NegativeEditor(), prompt="make it gold")
    loop.before_step(0)
    summary = loop.summary()
    assert EditSummary.from_state(summary.as_state()) == summary
    older = {key: value for key, value in summary.as_state().items() if key not in ("position", "agreement")}
    read = EditSummary.from_state(older)
    assert (read.prompt, read.edits, read.position, read.agreement) == ("make it gold", 2, 0, "not recorded")


def test_seeds_and_grouping_helpers() -> None:
    assert edit_seed(0, 10, 3) == edit_seed(0, 10, 3) != edit_seed(0, 10, 4)
    assert group_by_size([0, 1, 2], lambda v: (1, 1) if v != 1 else (2, 2)) == [[0, 2], [1]]
