"""Strips of original | render | edited in the training logger."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.utils import writer
from PIL import Image

from in2n.dataset_update.strips import STRIP_GROUP, edit_strip, log_edit_strips, strip_name, strips_due
from in2n.editors.negative import negative_target
from tests.conftest import SCENE
from tests.helpers import read_rgb
from tests.pipelines import make_pipeline


@pytest.fixture
def event_storage():
    """nerfstudio's queue of logger events, empty before and after the test."""
    writer.EVENT_STORAGE.clear()
    yield writer.EVENT_STORAGE
    writer.EVENT_STORAGE.clear()


def test_a_strip_puts_the_three_images_side_by_side() -> None:
    original, render, edited = torch.rand(3, 3, 5, 7).unbind(0)
    strip = edit_strip(original, render, edited)
    assert strip.shape == (5, 21, 3)
    for panel, image in enumerate((original, render, edited)):
        assert torch.equal(strip[:, 7 * panel : 7 * (panel + 1)], image.permute(1, 2, 0))
    out_of_range = edit_strip(original * 3 - 1, render, edited)
    assert out_of_range.min() >= 0 and out_of_range.max() <= 1


def test_strips_are_due_every_nth_edit_and_0_turns_them_off() -> None:
    edit_steps = range(300, 400, 10)
    assert [s for s in edit_steps if strips_due(s, edit_rate=10, every=3)] == [300, 330, 360, 390]
    assert all(strips_due(s, edit_rate=10, every=1) for s in edit_steps)
    assert not any(strips_due(s, edit_rate=10, every=0) for s in edit_steps)


def test_one_strip_per_finite_edit_is_queued(event_storage) -> None:
    originals, renders, edited = torch.rand(3, 2, 3, 4, 6).unbind(0)
    edited[1, 0, 0, 0] = torch.nan
    log_edit_strips([5, 9], originals, renders, edited, step=12)
    assert [(e["name"], e["step"]) for e in event_storage] == [(strip_name(5), 12)]
    assert strip_name(5) == f"{STRIP_GROUP}/view_0005"
    assert torch.equal(event_storage[0]["event"], edit_strip(originals[0], renders[0], edited[0]))


def test_the_pipeline_logs_strips_of_the_views_it_edits(scene: Path, event_storage) -> None:
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=2, log_strips_every=2)
    written = pipeline.edit_loop.edit_views(step=1)
    assert not [e for e in event_storage if e["name"].startswith(STRIP_GROUP)], "step 1 is not every 2nd edit"
    written = pipeline.edit_loop.edit_views(step=2)
    strips = {e["name"]: e["event"] for e in event_storage if e["name"].startswith(STRIP_GROUP)}
    assert set(strips) == {strip_name(view) for view in written}
    for view in written:
        height, width = pipeline.datamanager.training_images.image_size(view)
        strip = strips[strip_name(view)]
        assert strip.shape == (height, 3 * width, 3)
        torch.testing.assert_close(strip[:, :width], pipeline.datamanager.training_images.original_rgb(view))
        torch.testing.assert_close(strip[:, 2 * width :], pipeline.datamanager.training_images.current_rgb(view))


@pytest.mark.e2e
def test_strips_land_in_the_tensorboard_event_files(negative_run: Path, scene: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    events = EventAccumulator(str(negative_run), size_guidance={IMAGES: 0})
    events.Reload()
    tags = [tag for tag in events.Tags()[IMAGES] if tag.startswith(STRIP_GROUP)]
    strips = [(tag, event) for tag in tags for event in events.Images(tag)]
    # Three views edited at every step, strips of them every 20 steps (NEGATIVE_OPTIONS).
    steps = sorted({event.step for _, event in strips})
    assert len(steps) >= 2 and all(step % 20 == 0 for step in steps), steps
    assert len(strips) == 3 * len(steps), [tag for tag, _ in strips]
    train_images = NerfstudioDataParserConfig(data=scene).setup().get_dataparser_outputs("train").image_filenames
    for tag, event in strips:
        assert (event.width, event.height) == (3 * SCENE.width, SCENE.height)
        strip = torch.from_numpy(np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")))
        original, render, edited = (strip.float() / 255).split(SCENE.width, dim=1)
        expected = read_rgb(train_images[int(tag.rsplit("_", 1)[1])])
        # The logger stores 8-bit images by truncation.
        assert (original - expected).abs().max() <= 1.5 / 255, tag
        # The negative editor moves the render towards its target: edited - target = (1 - s) (render - target).
        target = negative_target(expected.permute(2, 0, 1)).permute(1, 2, 0)
        towards, away = (edited - target).flatten(), (render - target).flatten()
        keep = (towards @ away) / (away @ away)
        assert 0 <= keep <= 1 and (towards - keep * away).abs().max() < 3 / 255, tag
        assert render.std() > 0.02, "a rendered scene, not a blank frame"
