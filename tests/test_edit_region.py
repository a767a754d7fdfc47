"""Edits limited to a region: a box in the trained frame (from the render's surface points) or the dataset's masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, EditLoopConfig, ViewRender
from in2n.dataset_update.region import FEATHER_PX, BoxRegion, DatasetMaskRegion, blend, edit_region, feather
from in2n.editors.negative import NegativeEditor, negative_target
from in2n.errors import In2nError
from in2n.synthetic.scene import SceneConfig, object_bounds, write_scene
from tests.pipelines import make_pipeline, pipeline_config

H, W = 24, 32


def points_with_a_square() -> torch.Tensor:
    """Surface points [H, W, 3]: a square of pixels (rows 8-15, columns 10-21) lies at z = 1, the rest at z = 5."""
    points = torch.zeros(H, W, 3)
    points[..., 2] = 5.0
    points[8:16, 10:22, 2] = 1.0
    return points


def test_a_box_selects_the_pixels_whose_surface_is_inside_and_fades_out_around_them() -> None:
    mask = BoxRegion((-1.0, -1.0, 0.5, 1.0, 1.0, 1.5)).mask(0, points_with_a_square())
    assert mask.shape == (H, W)
    assert torch.all(mask[8:16, 10:22] == 1.0), "the whole region is edited, up to its edge"
    assert torch.all(mask[:, : 10 - FEATHER_PX] == 0.0) and torch.all(mask[: 8 - FEATHER_PX] == 0.0)
    ramp = mask[12, 10 - FEATHER_PX : 10]
    assert ramp.tolist() == [0.25, 0.5, 0.75], "a linear fade over FEATHER_PX pixels outside"
    assert torch.equal(feather(torch.ones(5, 5)), torch.ones(5, 5)) and feather(torch.zeros(4, 4)).sum() == 0


def test_blend_keeps_the_original_outside() -> None:
    edited, original = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [0.25, 0.0]])
    torch.testing.assert_close(blend(edited, original, mask), mask.expand(3, 2, 2))
    assert blend(edited, original, None) is edited


def test_the_loop_writes_the_edit_inside_the_box_and_the_original_outside() -> None:
    originals = torch.rand(2, H, W, 3, generator=torch.Generator().manual_seed(0))
    images = TrainingImages(originals.clone())
    config = EditLoopConfig(edit_rate=1, edit_count=2, edit_box=(-1.0, -1.0, 0.5, 1.0, 1.0, 1.5))
    asked = []

    def render(view: int, with_points: bool) -> ViewRender:
        asked.append(with_points)
        return ViewRender(originals[view], points_with_a_square())

    loop = EditLoop(config, NegativeEditor(), render, images)
    assert "box (-1, -1, 0.5) - (1, 1, 1.5)" in loop.describe()
    loop.before_step(0)
    assert asked == [True, True], "a box needs the surface points"
    mask = BoxRegion(config.edit_box).mask(0, points_with_a_square())
    for view in range(2):
        written, original = images.current_rgb(view), originals[view]
        assert torch.equal(written[mask == 0], original[mask == 0])
        inside = mask == 1
        assert not torch.allclose(written[inside], original[inside])
        # The negative editor moves the render (the original here) towards the negative: inside, closer to it.
        target = negative_target(original.permute(2, 0, 1)).permute(1, 2, 0)
        assert (written[inside] - target[inside]).abs().mean() < (original[inside] - target[inside]).abs().mean()


def test_dataset_masks_limit_the_edit_and_every_pixel_still_trains(tmp_path: Path) -> None:
    write_scene(tmp_path, SceneConfig(num_views=8, width=32, height=24, mask_object=0))
    pipeline = make_pipeline(tmp_path, lite=True, edit_masks="dataset", edit_rate=1, edit_count=2)
    loop, images = pipeline.edit_loop, pipeline.datamanager.training_images
    assert isinstance(loop.region, DatasetMaskRegion) and "mask" not in pipeline.datamanager.image_batch
    masks = torch.stack([m[..., 0] for m in images.masks])
    assert 0 < masks.float().mean() < 0.5, "the sphere covers part of the views"
    written = loop.edit_views(step=0)
    for view in written:
        outside = feather(masks[view].float()) == 0
        assert torch.equal(images.current_rgb(view)[outside], images.original_rgb(view)[outside])
        assert not torch.equal(images.current_rgb(view)[masks[view]], images.original_rgb(view)[masks[view]])
    _, batch = pipeline.datamanager.next_train(0)
    file = pipeline.datamanager.train_dataset.image_filenames[0]
    mask_file = tmp_path / "masks" / file.name
    assert np.asarray(Image.open(mask_file)).max() == 255 and "mask" not in batch


def test_regions_that_cannot_be_used_are_refused_with_the_option_named(scene: Path, tmp_path: Path) -> None:
    for box, expected in (
        ((0.0, 0.0, 0.0, 1.0, -1.0, 1.0), "empty or inverted along Y"),
        ((1.0, 0.0, 0.0, 1.0, 1.0, 1.0), "empty or inverted along X"),
        ((0.0, 0.0, 0.0, 1.0, 1.0, float("nan")), "finite number"),
    ):
        with pytest.raises(In2nError, match=expected):
            pipeline_config(scene, edit_box=box).check()
    with pytest.raises(In2nError, match="give one of them"):
        pipeline_config(scene, edit_box=(0.0, 0.0, 0.0, 1.0, 1.0, 1.0), edit_masks="dataset").check()
    with pytest.raises(In2nError, match="declares no masks"):
        edit_region(None, "dataset", TrainingImages(torch.zeros(2, 4, 4, 3)))


def test_object_bounds_enclose_the_object() -> None:
    low, high = object_bounds(SceneConfig(seed=0), 3)  # the box, standing on the ground
    assert low[2] == pytest.approx(0.0, abs=1e-6) and high[2] == pytest.approx(0.7)
    sphere_low, sphere_high = object_bounds(SceneConfig(seed=0), 0)
    assert sphere_low[2] == pytest.approx(0.0, abs=1e-6) and np.allclose(sphere_high - sphere_low, sphere_high[2])
