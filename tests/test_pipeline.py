"""The nerfstudio side of in2n: the datamanager's training images, rendering a training view, the losses, the viewer
panel, and what the pipeline's state dict holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.dataset_update.schedule import EditSchedule
from in2n.editors.negative import negative_target
from in2n.synthetic.scene import SceneConfig, write_scene
from in2n.viewer_panel import PANEL_NAME, EditSummaryPanel, LiveEditPanel
from tests.pipelines import make_pipeline, panel


@pytest.fixture(scope="module")
def pipeline(scene: Path):
    return make_pipeline(scene, edit_rate=1, edit_count=3)


def dataset_image(pipeline, view: int) -> torch.Tensor:
    path = pipeline.datamanager.train_dataset.image_filenames[view]
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float() / 255.0


def test_rows_of_the_image_tensor_are_the_views_in_dataset_order(pipeline) -> None:
    datamanager = pipeline.datamanager
    assert torch.equal(datamanager.image_batch["image_idx"], torch.arange(datamanager.num_views))
    images = datamanager.training_images
    assert images.num_views == datamanager.num_views
    for view in (0, 5, datamanager.num_views - 1):
        torch.testing.assert_close(images.original_rgb(view), dataset_image(pipeline, view), atol=1e-6, rtol=0)


def test_replacing_a_view_changes_only_that_row_and_keeps_the_original(scene: Path) -> None:
    images = make_pipeline(scene).datamanager.training_images
    before = images.rows.clone()
    images.replace_image(3, torch.zeros(*images.image_size(3), 3))
    assert images.current_rgb(3).abs().sum() == 0
    changed = (images.rows != before).flatten(1).any(dim=1)
    assert changed.tolist() == [v == 3 for v in range(images.num_views)]
    torch.testing.assert_close(images.original_rgb(3), before[3])
    with pytest.raises(ValueError, match="replacement"):
        images.replace_image(3, torch.zeros(4, 4, 3))
    images.restore_originals()
    assert torch.equal(images.rows, before)


def test_sampled_training_rays_see_the_edited_image(scene: Path) -> None:
    datamanager = make_pipeline(scene).datamanager
    images = datamanager.training_images
    for view in range(images.num_views):
        images.replace_image(view, torch.full((*images.image_size(view), 3), 0.25))
    _, batch = datamanager.next_train(0)
    assert torch.allclose(batch["image"], torch.tensor(0.25))


def test_inference_mode_has_no_training_batch_no_editor_and_a_read_only_panel(scene: Path) -> None:
    pipeline = make_pipeline(scene, test_mode="inference")
    assert pipeline.edit_loop is None
    assert not hasattr(pipeline.datamanager, "image_batch")
    assert isinstance(panel(pipeline), EditSummaryPanel)


def test_the_edit_depends_on_the_views_own_render(scene: Path) -> None:
    """The negative editor mixes render and target; the written image must use this view's render."""
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=1, lower_bound=0.5, upper_bound=0.5)
    loop, images = pipeline.edit_loop, pipeline.datamanager.training_images
    view = EditSchedule(images.num_views, seed=0).next_views(1)[0]
    render = pipeline.render_view(view)
    loop.edit_views(step=0)
    target = negative_target(images.original_rgb(view).permute(2, 0, 1)).permute(1, 2, 0)
    torch.testing.assert_close(images.current_rgb(view), 0.5 * render + 0.5 * target, atol=1e-5, rtol=0)


def test_render_view_uses_each_views_camera(pipeline) -> None:
    a, b = pipeline.render_view(0), pipeline.render_view(1)
    assert a.shape == (*pipeline.datamanager.training_images.image_size(0), 3)
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


def test_patch_sampling_gives_whole_patches(pipeline) -> None:
    _, batch = pipeline.datamanager.next_train(0)
    assert batch["image"].shape[0] == 1024
    indices = batch["indices"].view(-1, 32, 32, 3)
    assert (indices[..., 0] == indices[:, :1, :1, 0]).all(), "a patch comes from one view"


def test_pipeline_state_dict_holds_no_diffusion_weights_but_the_edits_summary(scene: Path, tiny_ip2p: Path) -> None:
    pipeline = make_pipeline(scene, editor="ip2p", ip2p_model=str(tiny_ip2p), prompt="make it gold", edit_count=2)
    assert pipeline.edit_loop.editor.name == "ip2p"
    pipeline.edit_loop.edit_views(step=0)
    state = pipeline.state_dict()
    assert not [k for k in state if any(part in k for part in ("unet", "vae", "text_encoder", "editor"))]
    summary = state[f"{PANEL_NAME}._extra_state"]
    assert summary["prompt"] == "make it gold" and summary["edits"] == 2 and summary["num_views"] == 18


def test_the_panel_of_a_finished_run_shows_its_edit_read_only(scene: Path) -> None:
    trained = make_pipeline(scene, edit_rate=1, edit_count=3, prompt="make it gold", guidance_scale=6.0)
    for step in range(3):
        trained.edit_loop.edit_views(step)
    viewer = make_pipeline(scene, test_mode="inference")
    viewer.load_pipeline(trained.state_dict(), step=1234)
    summary = panel(viewer)
    assert [summary.prompt.value, summary.guidance.value] == ["make it gold", "6, 1.5"]
    assert summary.edits.value == "9 edits of 18 views, 0 full passes" and summary.ended.value == "1234"
    assert all(element.disabled for element in (summary.prompt, summary.guidance, summary.edits, summary.ended))
    # A checkpoint without an edit (nerfacto's, or written before the panel existed) still loads.
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith(PANEL_NAME)}
    viewer.load_pipeline(state, step=10)
    assert summary.prompt.value == "this checkpoint holds no edit"


def test_the_live_panel_writes_into_the_loop_and_shows_its_progress(scene: Path) -> None:
    pipeline = make_pipeline(scene, edit_rate=1, edit_count=2)
    controls, live = panel(pipeline), pipeline.edit_loop.live
    assert isinstance(controls, LiveEditPanel)
    # As the viewer does when a field changes: set the value, call the element's hook.
    for element, value in ((controls.prompt, "make it snowy"), (controls.guidance_scale, 3.0),
                           (controls.image_guidance_scale, 0.5), (controls.pause_edits, True)):  # fmt: skip
        element.value = value
        element.cb_hook(element)
    assert (live.prompt, live.guidance_scale, live.image_guidance_scale, live.paused) == (
        "make it snowy",
        3.0,
        0.5,
        True,
    )
    pipeline.get_train_loss_dict(step=0)
    assert pipeline.edit_loop.schedule.views_edited == 0, "paused"
    controls.pause_edits.value = False
    controls.pause_edits.cb_hook(controls.pause_edits)
    pipeline.get_train_loss_dict(step=1)
    assert controls.progress.value.startswith("2 edits, 2/18 views changed, pass 1 (2/18); agreement ")


def test_rgba_views_are_edited_over_white_and_stored_opaque(tmp_path: Path, capsys) -> None:
    write_scene(tmp_path, SceneConfig(num_views=8, rgba=True))
    pipeline = make_pipeline(tmp_path, edit_count=2)
    images = pipeline.datamanager.training_images
    assert images.num_channels == 4
    assert "alpha channel" in " ".join(capsys.readouterr().out.split())
    sky = images.originals[0][..., 3] == 0
    assert sky.any(), "the scene has transparent pixels"
    assert torch.equal(images.original_rgb(0)[sky], torch.ones(int(sky.sum()), 3)), "composited over white"
    written = pipeline.edit_loop.edit_views(step=0)
    assert len(written) == 2
    for view in written:
        assert torch.equal(images.rows[view][..., 3], torch.ones(images.image_size(view)))
        assert not torch.equal(images.current_rgb(view), images.original_rgb(view))
    untouched = next(v for v in range(images.num_views) if v not in written)
    assert torch.equal(images.rows[untouched], images.originals[untouched])
