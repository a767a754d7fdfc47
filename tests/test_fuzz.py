"""Fuzzed options and image shapes: every combination either edits (finite images of the view's size) or stops
with an In2nError that says what to change, never with another exception.

Pipelines are not built per example (a nerfacto each would take minutes): the options go through the same
validation the pipeline runs first, then drive the real edit loop (`EditLoop`: schedule, per-view seeds, editor,
write-back) over two edit steps, with random training images and renders of the fuzzed shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import in2n.console
from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, ViewRender
from in2n.editors.base import Editor
from in2n.editors.ip2p import InstructPix2PixEditor
from in2n.editors.negative import NegativeEditor
from in2n.errors import In2nError
from in2n.pipeline import In2nPipelineConfig
from tests.pipelines import pipeline_config

NUM_VIEWS = 20
"""Views of the session scene, which the schedule is built for."""

SPECIAL_FLOATS = [float("nan"), float("inf"), float("-inf"), -0.0, -1.0, 1e-300, 1e308, -1e308]
SPECIAL_INTS = [0, -1, 1, 1000, 1001, 2**31, 2**63, 2**64 + 5, -(2**63), 10**30]


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Typical values, the special values users can type (`nan`, `inf`), and anything a float can hold."""
    return st.one_of(
        st.floats(low, high),
        st.sampled_from(SPECIAL_FLOATS),
        st.floats(allow_nan=True, allow_infinity=True),
    )


def ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(low, high), st.sampled_from(SPECIAL_INTS), st.integers())


OPTIONS = st.fixed_dictionaries(
    {
        "guidance_scale": floats(0.0, 20.0),
        "image_guidance_scale": floats(0.0, 5.0),
        "lower_bound": floats(0.0, 1.0),
        "upper_bound": floats(0.0, 1.0),
        "edit_rate": ints(1, 20),
        "edit_count": ints(1, 25),
        "max_edit_size": ints(32, 128),
        "seed": ints(0, 100),
        "scale_steps_with_noise": st.booleans(),
    }
)

SIDES = st.one_of(st.integers(1, 40), st.sampled_from([1, 2, 3, 63, 64, 65, 97, 129]))


@pytest.fixture(autouse=True)
def forget_notices_afterwards() -> Iterator[None]:
    """One-time notices raised here must still show in the tests that expect to see them first."""
    shown = set(in2n.console._shown)
    yield
    in2n.console._shown.clear()
    in2n.console._shown.update(shown)


@pytest.fixture(scope="module")
def ip2p(tiny_ip2p: Path) -> InstructPix2PixEditor:
    # Uncached: examples reuse view numbers and sizes with different originals.
    return InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"), cache_condition_latents=False)


def validated(scene: Path, options: Dict[str, Any]) -> Optional[In2nPipelineConfig]:
    """The config if it passes validation; None if validation explains what is wrong (an In2nError)."""
    config = pipeline_config(scene, **options)
    try:
        config.check()
    except In2nError as error:
        assert str(error).strip(), "the message says what is wrong"
        return None
    return config


def edit_step(config: In2nPipelineConfig, editor: Editor, height: int, width: int, num_views: int) -> None:
    """The real edit loop with the options, on random training images and renders of the given size: the edit
    steps of a run's start, across a pass boundary when views per edit allow it."""
    generator = torch.Generator().manual_seed(height * 1000 + width)
    images = TrainingImages(torch.rand(num_views, height, width, 3, generator=generator))
    renders = torch.rand(num_views, height, width, 3, generator=generator)
    loop = EditLoop(config, editor, lambda view, with_points: ViewRender(renders[view]), images)
    for step in (config.edit_rate, 2 * config.edit_rate):
        edits_before = loop.schedule.views_edited
        loop.before_step(step)
        assert 1 <= loop.schedule.views_edited - edits_before <= min(config.edit_count, num_views)
    assert torch.isfinite(images.rows).all() and images.rows.min() >= 0.0 and images.rows.max() <= 1.0
    for view in set(range(num_views)) - loop.edited_views:
        assert torch.equal(images.rows[view], images.originals[view])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=OPTIONS, diffusion_steps=ints(1, 50), height=SIDES, width=SIDES)
def test_any_options_validate_or_raise_in2n_error(
    scene: Path, options: Dict[str, Any], diffusion_steps: int, height: int, width: int
) -> None:
    """The whole option space, with the cheap negative editor."""
    config = validated(scene, {**options, "diffusion_steps": diffusion_steps, "editor": "negative"})
    if config is not None:
        edit_step(config, NegativeEditor(), height, width, num_views=NUM_VIEWS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=OPTIONS,
    # The tiny UNet's cost is per DDIM step: the full range is covered above, here up to the step cap.
    diffusion_steps=st.one_of(st.integers(-2, 6), st.sampled_from([1000, 1001, 2**40])),
    height=SIDES,
    width=SIDES,
)
def test_any_options_and_image_shape_edit_with_instructpix2pix_or_raise_in2n_error(
    scene: Path,
    ip2p: InstructPix2PixEditor,
    options: Dict[str, Any],
    diffusion_steps: int,
    height: int,
    width: int,
) -> None:
    config = validated(scene, {**options, "diffusion_steps": diffusion_steps, "editor": "ip2p", "prompt": "x"})
    if config is None:
        return
    ip2p.max_edit_size = config.max_edit_size
    edit_step(config, ip2p, height, width, num_views=2)  # the editor's cost grows with the batch


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("guidance_scale", float("inf"), "--pipeline.guidance-scale is inf"),
        ("image_guidance_scale", math.inf, "--pipeline.image-guidance-scale is inf"),
        ("diffusion_steps", 1001, "--pipeline.diffusion-steps is 1001"),
    ],
)
def test_values_that_cannot_give_an_edit_are_rejected_with_the_option_named(
    scene: Path, option: str, value: Any, expected: str
) -> None:
    with pytest.raises(In2nError, match=expected.replace(".", r"\.")):
        pipeline_config(scene, **{option: value}).check()
