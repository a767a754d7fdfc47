"""The datamanager, the edit schedule in the pipeline, the model's losses, and the checkpointed edit state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.editing.reference import reference_target
from in2n.pipeline import edit_seed, group_by_size
from in2n.schedule import EditSchedule
from in2n.synthetic.scene import SceneConfig, write_scene
from tests.pipelines import make_pipeline


@pytest.fixture(scope="module")
def pipeline(scene: Path):
    return make_pipeline(scene, edit_rate=1, edit_count=3)


def dataset_image(scene: Path, pipeline, view: int) -> torch.Tensor:
    path = pipeline.datamanager.train_dataset.image_filenames[view]
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float() / 255.0


def test_rows_of_the_image_tensor_are_the_views_in_dataset_order(scene: Path, pipeline) -> None:
    datamanager = pipeline.datamanager
    assert torch.equal(datamanager.image_batch["image_idx"], torch.arange(datamanager.num_views))
    for view in (0, 5, datamanager.num_views - 1):
        torch.testing.assert_close(datamanager.original_rgb(view), dataset_image(scene, pipeline, view), atol=1e-6,
                                   rtol=0)  # fmt: skip


def test_replacing_a_view_changes_only_that_row_and_keeps_the_original(scene: Path) -> None:
    datamanager = make_pipeline(scene).datamanager
    before = datamanager.images.clone()
    datamanager.replace_image(3, torch.zeros(*datamanager.image_size(3), 3))
    assert datamanager.current_rgb(3).abs().sum() == 0
    changed = (datamanager.images != before).flatten(1).any(dim=1)
    assert changed.tolist() == [v == 3 for v in range(datamanager.num_views)]
    torch.testing.assert_close(datamanager.original_rgb(3), before[3])
    with pytest.raises(ValueError, match="replacement"):
        datamanager.replace_image(3, torch.zeros(4, 4, 3))
    datamanager.restore_originals()
    assert torch.equal(datamanager.images, before)


def test_sampled_training_rays_see_the_edited_image(scene: Path) -> None:
    pipeline = make_pipeline(scene)
    datamanager = pipeline.datamanager
    for view in range(datamanager.num_views):
        datamanager.replace_image(view, torch.full((*datamanager.image_size(view), 3), 0.25))
    _, batch = datamanager.next_train(0)
    assert torch.allclose(batch["image"], torch.tensor(0.25))


def test_inference_mode_has_no_training_batch_and_no_editor(scene: Path) -> None:
    pipeline = make_pipeline(scene, test_mode="inference")
    assert pipeline.editor is None and pipeline.schedule is None
    assert not hasattr(pipeline.datamanager, "image_batch")


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


def test_edit_step_renders_edits_and_writes_views(scene: Path) -> None:
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=3)
    datamanager = pipeline.datamanager
    originals = datamanager.original_images.clone()
    written = pipeline.edit_views(step=0)
    assert len(written) == 3 and set(written) == pipeline.edited_views
    for view in range(datamanager.num_views):
        changed = not torch.equal(datamanager.images[view], originals[view])
        assert changed == (view in written)
    assert torch.equal(datamanager.original_images, originals)
    assert pipeline.schedule.views_edited == 3


def test_the_edit_depends_on_the_views_own_render(scene: Path) -> None:
    """The reference editor mixes render and target; the written image must use this view's render."""
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=1, lower_bound=0.5, upper_bound=0.5)
    view = pipeline.schedule.next_views(1)[0]
    pipeline.schedule.load_state_dict(EditSchedule(pipeline.datamanager.num_views, seed=0).state_dict())
    render = pipeline.render_view(view)
    pipeline.edit_views(step=0)
    target = reference_target(pipeline.datamanager.original_rgb(view).permute(2, 0, 1)).permute(1, 2, 0)
    torch.testing.assert_close(pipeline.datamanager.current_rgb(view), 0.5 * render + 0.5 * target, atol=1e-5,
                               rtol=0)  # fmt: skip


def test_render_view_uses_each_views_camera(scene: Path, pipeline) -> None:
    a, b = pipeline.render_view(0), pipeline.render_view(1)
    assert a.shape == (*pipeline.datamanager.image_size(0), 3)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(pipeline.render_view(0), a)  # deterministic
    assert pipeline.training, "rendering for an edit must leave the pipeline in training mode"


def test_train_loss_has_l1_and_lpips_for_in2n_and_no_lpips_for_lite(scene: Path) -> None:
    pipeline = make_pipeline(scene, edit_rate=1000)
    _, losses, _ = pipeline.get_train_loss_dict(step=1)
    assert {"rgb_loss", "lpips_loss"} <= set(losses)
    assert isinstance(pipeline.model.rgb_loss, torch.nn.L1Loss)
    losses["lpips_loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pipeline.model.field.parameters())
    lite = make_pipeline(scene, lite=True, edit_rate=1000)
    _, lite_losses, _ = lite.get_train_loss_dict(step=1)
    assert "lpips_loss" not in lite_losses and "rgb_loss" in lite_losses
    assert lite.datamanager.get_train_rays_per_batch() == 1024


def test_patch_sampling_gives_whole_patches(scene: Path, pipeline) -> None:
    _, batch = pipeline.datamanager.next_train(0)
    assert batch["image"].shape[0] == 1024
    indices = batch["indices"].view(-1, 32, 32, 3)
    assert (indices[..., 0] == indices[:, :1, :1, 0]).all(), "a patch comes from one view"


def test_edit_state_round_trips_through_a_fresh_pipeline(scene: Path) -> None:
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=4)
    pipeline.edit_views(step=0)
    pipeline.edit_views(step=1)
    state = pipeline.edit_state_dict()
    assert all(image.dtype == torch.uint8 for image in state["edited_images"])
    fresh = make_pipeline(scene, edit_rate=1, edit_count=4)
    fresh.load_edit_state_dict(state)
    assert fresh.edited_views == pipeline.edited_views
    for view in pipeline.edited_views:
        torch.testing.assert_close(fresh.datamanager.current_rgb(view), pipeline.datamanager.current_rgb(view),
                                   atol=0.5 / 255 + 1e-6, rtol=0)  # fmt: skip
    assert fresh.schedule.next_views(4) == pipeline.schedule.next_views(4)


def test_pipeline_state_dict_holds_no_diffusion_weights(scene: Path, tiny_ip2p: Path) -> None:
    pipeline = make_pipeline(scene, editor="ip2p", ip2p_model=str(tiny_ip2p))
    keys = list(pipeline.state_dict())
    assert pipeline.editor is not None and pipeline.editor.name == "ip2p"
    assert not [k for k in keys if any(part in k for part in ("unet", "vae", "text_encoder", "_editor"))]


def test_a_non_finite_edit_keeps_the_image_and_retries_the_view(scene: Path, capsys) -> None:
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=2)
    real_edit = pipeline.editor.edit
    pipeline.editor.edit = lambda renders, *args: real_edit(renders, *args) * torch.nan
    before = pipeline.datamanager.images.clone()
    views = pipeline.schedule.order[:2]
    assert pipeline.edit_views(step=0) == []
    assert torch.equal(pipeline.datamanager.images, before)
    assert pipeline.schedule.retry == views
    assert "was not finite" in " ".join(capsys.readouterr().out.split())
    pipeline.editor.edit = real_edit
    assert sorted(pipeline.edit_views(step=1)) == sorted(views)


def test_reset_restores_images_schedule_and_model(scene: Path) -> None:
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=3)
    pipeline.remember_initial_model()
    weights = {k: v.clone() for k, v in pipeline.model.state_dict().items()}
    pipeline.edit_views(step=0)
    with torch.no_grad():
        for parameter in pipeline.model.parameters():
            parameter.add_(1.0)
    pipeline.edit_controls.reset.cb_hook(pipeline.edit_controls.reset)
    assert pipeline.edited_views, "the viewer's thread only requests the reset"
    pipeline.config.edit_rate = 2
    pipeline.get_train_loss_dict(step=1)  # the training thread resets before the step (which makes no edit)
    assert torch.equal(pipeline.datamanager.images, pipeline.datamanager.original_images)
    assert pipeline.edited_views == set() and pipeline.schedule.views_edited == 0
    for key, value in pipeline.model.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_seeds_and_grouping_helpers() -> None:
    assert edit_seed(0, 10, 3) == edit_seed(0, 10, 3) != edit_seed(0, 10, 4)
    assert group_by_size([0, 1, 2], lambda v: (1, 1) if v != 1 else (2, 2)) == [[0, 2], [1]]


def test_rgba_views_are_edited_over_white_and_stored_opaque(tmp_path: Path, capsys) -> None:
    write_scene(tmp_path, SceneConfig(num_views=8, rgba=True))
    pipeline = make_pipeline(tmp_path, edit_count=2)
    datamanager = pipeline.datamanager
    assert datamanager.num_channels == 4
    assert "alpha channel" in " ".join(capsys.readouterr().out.split())
    sky = datamanager.original_images[0][..., 3] == 0
    assert sky.any(), "the scene has transparent pixels"
    assert torch.equal(datamanager.original_rgb(0)[sky], torch.ones(int(sky.sum()), 3)), "composited over white"
    written = pipeline.edit_views(step=0)
    assert len(written) == 2
    for view in written:
        assert torch.equal(datamanager.images[view][..., 3], torch.ones(datamanager.image_size(view)))
        assert not torch.equal(datamanager.current_rgb(view), datamanager.original_rgb(view))
    untouched = next(v for v in range(datamanager.num_views) if v not in written)
    assert torch.equal(datamanager.images[untouched], datamanager.original_images[untouched])
