"""The two edit schedules: a few views every edit_rate steps (Instruct-NeRF2NeRF), and a pass over every view every
pass_every steps, edit_count views per diffusion call (Instruct-GS2GS)."""

from __future__ import annotations

from typing import List, Sequence

import pytest
from torch import Tensor

from in2n.dataset_update.loop import EditLoop, EditLoopConfig
from in2n.editors.negative import NegativeEditor
from in2n.errors import In2nError
from in2n.validation import edit_problems, raise_problems
from tests.test_edit_loop import NUM_VIEWS, changed, make_loop


class CallRecorder(NegativeEditor):
    """The negative editor, remembering the views of every diffusion call."""

    def __init__(self) -> None:
        self.calls: List[List[int]] = []

    def edit(self, renders: Tensor, originals: Tensor, views: Sequence[int], *rest) -> Tensor:
        self.calls.append(list(views))
        return super().edit(renders, originals, views, *rest)


def run_steps(loop: EditLoop, steps: range) -> None:
    for step in steps:
        loop.before_step(step)


def test_passes_edit_every_view_at_the_start_and_every_pass_every_steps_in_batches_of_edit_count() -> None:
    editor = CallRecorder()
    loop = make_loop(editor, edit_schedule="passes", pass_every=5, edit_count=4)
    loop.begin(100, length=20)
    run_steps(loop, range(100, 105))
    # One pass at the first step: every view once, 4 per call (6 views: calls of 4 and 2).
    assert [len(call) for call in editor.calls] == [4, 2]
    assert sorted(view for call in editor.calls for view in call) == list(range(NUM_VIEWS))
    assert changed(loop) == list(range(NUM_VIEWS))
    assert loop.schedule.passes_completed == 0 and loop.schedule.position == NUM_VIEWS
    run_steps(loop, range(105, 120))
    # Passes at 105, 110 and 115, none between them.
    assert len(editor.calls) == 8
    assert loop.schedule.views_edited == 4 * NUM_VIEWS and loop.schedule.passes_completed == 3
    steps = sorted({record.step for record in loop.progress.records})
    assert steps == [100, 105, 110, 115]
    assert sorted(loop.progress.pass_psnr) == [0, 1, 2], "each finished pass has its agreement"


def test_passes_count_from_the_edits_first_step_also_after_a_resume() -> None:
    first = make_loop(CallRecorder(), edit_schedule="passes", pass_every=4, edit_count=3)
    first.begin(101, length=12)
    run_steps(first, range(101, 107))
    state = first.edit_state()
    resumed = make_loop(editor := CallRecorder(), edit_schedule="passes", pass_every=4, edit_count=3)
    resumed.resume(state, length=12)
    run_steps(resumed, range(107, 114))
    assert len(editor.calls) == 2 * 2, "passes at 109 and 113 only, two calls each"
    assert resumed.edits_due(109) and resumed.edits_due(105) and not resumed.edits_due(108)
    assert resumed.schedule.views_edited == 4 * NUM_VIEWS


def test_views_schedule_is_unchanged_by_the_pass_options() -> None:
    editor = CallRecorder()
    loop = make_loop(editor, edit_rate=3, edit_count=2, pass_every=1)
    run_steps(loop, range(0, 9))
    assert [len(call) for call in editor.calls] == [2, 2, 2], "steps 0, 3 and 6"
    assert loop.schedule.views_edited == 6


def test_a_paused_pass_is_skipped_until_the_next_one() -> None:
    editor = CallRecorder()
    loop = make_loop(editor, edit_schedule="passes", pass_every=5, edit_count=6)
    loop.begin(0)
    loop.live.paused = True
    run_steps(loop, range(0, 5))
    assert editor.calls == []
    loop.live.paused = False
    run_steps(loop, range(5, 10))
    assert len(editor.calls) == 1 and len(editor.calls[0]) == NUM_VIEWS


def test_the_loop_says_which_schedule_it_runs() -> None:
    assert (
        "every view edited every 2500 steps, 4 per diffusion call"
        in make_loop(NegativeEditor(), edit_schedule="passes", pass_every=2500, edit_count=4).describe()
    )
    assert "2 view(s) edited every 10 steps" in make_loop(NegativeEditor(), edit_rate=10, edit_count=2).describe()


def test_pass_every_must_be_positive() -> None:
    with pytest.raises(In2nError, match=r"--pipeline.pass-every is 0; it must be at least 1"):
        raise_problems(edit_problems(EditLoopConfig(edit_schedule="passes", pass_every=0), prompt_needed=False))
