"""A splat edit set up in-process as ns-train sets it up: loading nerfstudio's own splatfacto checkpoints, the
optimizers rebuilt on the loaded Gaussians (the failure of Instruct-GS2GS on nerfstudio newer than 1.0.3), resuming
their state, rendering a training view for an edit, and the messages for runs and options it cannot edit."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
import tyro
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from scipy import ndimage

from bench.training import training_step
from in2n import console
from in2n.dataset_update.region import FEATHER_PX
from in2n.errors import In2nError
from in2n.method_configs import in2n as in2n_method
from in2n.method_configs import in2n_splat
from in2n.splat import pipeline as splat_pipeline
from in2n.splat.model import In2nSplatModelConfig, SplatModelConfig
from in2n.splat.pipeline import In2nSplatPipeline
from in2n.synthetic.cpu_preset import CPU_TRAINER_ARGS, SMALL_MODEL_ARGS, SMALL_SPLAT_ARGS
from in2n.trainer import In2nTrainer, In2nTrainerConfig
from in2n.viewer_panel import PANEL_NAME, EditSummaryPanel, LiveEditPanel

STOCK_GAUSSIANS = 800
"""Gaussians of the splatfacto checkpoint; in2n-splat builds its model with 50000 before loading it."""
STOCK_STEP = 299


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The CPU route sets torch to one thread; the rest of the test session keeps its own setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stock_splatfacto(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nerfstudio_models folder of a run of nerfstudio's own splatfacto model and pipeline (random Gaussians,
    which it builds without CUDA; not trained), with its config.yml, as `ns-train splatfacto` writes them."""
    config = TrainerConfig(
        method_name="splatfacto",
        output_dir=tmp_path_factory.mktemp("stock"),
        experiment_name="scene",
        timestamp="splatfacto",
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(data=scene, load_3D_points=True), cache_images_type="uint8"
            ),
            model=SplatfactoModelConfig(random_init=True, num_random=STOCK_GAUSSIANS, sh_degree=1),
        ),
    )
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    config.save_config()
    models = config.get_checkpoint_dir()
    models.mkdir(parents=True)
    state = {"step": STOCK_STEP, "pipeline": pipeline.state_dict(), "optimizers": {}, "schedulers": {}, "scalers": {}}
    torch.save(state, models / f"step-{STOCK_STEP:09d}.ckpt")
    return models


def edit_trainer(
    load_dir: Path, output: Path, scene: Path, *args: Any, method=in2n_splat, model_args=SMALL_SPLAT_ARGS
) -> In2nTrainer:
    """An in2n-splat (or `method`, with its `model_args`) trainer with the negative editor on the CPU, set up as
    ns-train sets it up."""
    config = tyro.cli(
        tyro.conf.FlagConversionOff[In2nTrainerConfig],
        default=copy.deepcopy(method.config),
        args=[*CPU_TRAINER_ARGS, *model_args, "--vis", "tensorboard", "--pipeline.editor", "negative",
              "--load-dir", str(load_dir), "--output-dir", str(output), "--experiment-name", "scene",
              "--timestamp", "edit", *map(str, args), "nerfstudio-data", "--data", str(scene)],
    )  # fmt: skip
    config.save_config()  # ns-train writes the run's config.yml before it sets up the trainer
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


GAUSSIAN_PARAMETERS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


def test_after_loading_every_gaussian_is_in_its_optimizer_moves_and_densification_counts_them(
    stock_splatfacto: Path, scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_before_loading: List[Any] = []
    rebuild = In2nTrainer._rebuild_optimizers

    def remember_first_optimizers(self: In2nTrainer) -> None:
        built_before_loading.append(self.optimizers)
        rebuild(self)

    monkeypatch.setattr(In2nTrainer, "_rebuild_optimizers", remember_first_optimizers)
    # Spherical harmonics of every degree from the first step, so that features_rest has gradients too.
    trainer = edit_trainer(stock_splatfacto, tmp_path, scene, "--pipeline.model.sh-degree-interval", 1)
    model = trainer.pipeline.model
    assert model.num_points == STOCK_GAUSSIANS
    assert model.config.sh_degree == 1, "taken from the run being edited (in2n-splat's default is 3)"
    # What nerfstudio's Trainer built before the checkpoint replaced the Gaussians: it would train none of them.
    stale = built_before_loading[0].optimizers["means"].param_groups[0]["params"][0]
    assert stale.shape[0] == 50000 and stale is not model.means
    before: Dict[str, torch.Tensor] = {}
    for name in GAUSSIAN_PARAMETERS:
        (held,) = trainer.optimizers.optimizers[name].param_groups[0]["params"]
        assert held is model.gauss_params[name], name
        before[name] = held.detach().clone()
    training_step(trainer, STOCK_STEP + 1)
    for name in GAUSSIAN_PARAMETERS:
        assert not torch.equal(before[name], model.gauss_params[name].detach()), f"{name} did not move"
    state = model.strategy_state
    assert state["grad2d"].shape == state["count"].shape == (STOCK_GAUSSIANS,)
    assert state["count"].sum() > 0, "the densification statistics saw the loaded Gaussians"


def test_a_resumed_edit_loads_the_saved_optimizer_state_into_optimizers_on_the_loaded_gaussians(
    stock_splatfacto: Path, scene: Path, tmp_path: Path
) -> None:
    first = edit_trainer(stock_splatfacto, tmp_path, scene, "--max-num-iterations", 10)
    for step in (STOCK_STEP + 1, STOCK_STEP + 2):
        training_step(first, step)
    first.save_checkpoint(STOCK_STEP + 2)
    saved = first.optimizers.optimizers["means"].state_dict()["state"][0]["exp_avg"].clone()
    assert saved.abs().sum() > 0
    resumed = edit_trainer(first.checkpoint_dir, tmp_path, scene, "--max-num-iterations", 10)
    optimizer = resumed.optimizers.optimizers["means"]
    (held,) = optimizer.param_groups[0]["params"]
    assert held is resumed.pipeline.model.means
    assert torch.equal(optimizer.state[held]["exp_avg"], saved)
    assert resumed.config.max_num_iterations == 8, "the edit continues where it stopped"
    assert resumed.pipeline.model.strategy_state["grad2d"] is None, "densification statistics restart"


def test_a_training_view_renders_with_its_own_camera_and_its_surface_points(
    stock_splatfacto: Path, scene: Path, tmp_path: Path
) -> None:
    trainer = edit_trainer(stock_splatfacto, tmp_path, scene)
    pipeline = trainer.pipeline
    assert isinstance(pipeline, In2nSplatPipeline)
    view = 3
    rendered = pipeline.render_for_edit(view, with_points=True)
    assert rendered.rgb.shape == (48, 64, 3) and rendered.points is not None
    assert pipeline.model.training, "rendering a view for an edit leaves the model training"
    # The points project back onto their pixels in the view's camera.
    camera = pipeline.datamanager.train_dataset.cameras[view]
    world_to_camera = torch.linalg.inv(torch.cat([camera.camera_to_worlds, torch.tensor([[0.0, 0, 0, 1]])]))
    local = rendered.points.reshape(-1, 3) @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    u = camera.fx * local[:, 0] / -local[:, 2] + camera.cx
    v = camera.fy * -local[:, 1] / -local[:, 2] + camera.cy
    rows, columns = torch.meshgrid(torch.arange(48) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    assert torch.allclose(u, columns.flatten(), atol=1e-2) and torch.allclose(v, rows.flatten(), atol=1e-2)
    assert isinstance(getattr(pipeline, PANEL_NAME), LiveEditPanel), "the viewer's live controls"


def test_ns_render_builds_the_splat_pipeline_without_an_editor(scene: Path) -> None:
    config = copy.deepcopy(in2n_splat.config.pipeline)
    config.datamanager.data = scene
    config.editor = "ip2p"  # would need weights, were the editor loaded
    pipeline = config.setup(device="cpu", test_mode="inference")
    assert pipeline.edit_loop is None and isinstance(getattr(pipeline, PANEL_NAME), EditSummaryPanel)


def test_in2n_splat_given_a_nerf_checkpoint_says_so(scene: Path, tmp_path: Path) -> None:
    """Without its config.yml, the kind is read from the checkpoint's parameters."""
    models = tmp_path / "nerf" / "nerfstudio_models"
    models.mkdir(parents=True)
    nerf = {"_model.field.mlp_base.params": torch.zeros(4), "_model.proposal_networks.0.weight": torch.zeros(2)}
    torch.save({"step": 9, "pipeline": nerf}, models / "step-000000009.ckpt")
    with pytest.raises(In2nError) as error:
        edit_trainer(models, tmp_path, scene)
    message = " ".join(str(error.value).split())
    assert "holds a NeRF (a nerfacto run), but in2n-splat edits Gaussian splats" in message
    assert f"`ns-train in2n --load-dir {models}`" in message and "`ns-train splatfacto --data DATA`" in message


def test_in2n_given_a_splatfacto_run_says_so_before_loading_anything(
    stock_splatfacto: Path, scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(In2nTrainer, "_load_checkpoint", lambda self: pytest.fail("the checkpoint was loaded"))
    with pytest.raises(In2nError) as error:
        edit_trainer(stock_splatfacto, tmp_path, scene, method=in2n_method, model_args=SMALL_MODEL_ARGS)
    message = " ".join(str(error.value).split())
    assert "holds Gaussian splats (a splatfacto run), but in2n edits a NeRF" in message
    assert f"`ns-train in2n-splat --load-dir {stock_splatfacto}`" in message


def test_options_and_machines_a_splat_edit_cannot_use_are_refused_before_the_data_loads(
    scene: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = copy.deepcopy(in2n_splat.config.pipeline)
    config.datamanager.data = scene
    config.editor = "negative"
    config.datamanager.cache_images_type = "uint8"
    with pytest.raises(In2nError, match=r"cache-images-type uint8 would round every edit to 8 bits"):
        config.setup(device="cpu", test_mode="val")
    config.datamanager.cache_images_type = "float32"
    monkeypatch.setattr(splat_pipeline, "cuda_kernels_problem", lambda: "gsplat has no CUDA kernels here: install")
    monkeypatch.setattr(In2nSplatPipeline, "training_images", property(lambda self: pytest.fail("data loaded")))
    with pytest.raises(In2nError, match=r"gsplat has no CUDA kernels here: install"):
        config.setup(device="cuda:0", test_mode="val")


def test_a_splat_edit_records_its_progress_with_the_checkpoints_lpips(
    stock_splatfacto: Path, scene: Path, tmp_path: Path
) -> None:
    trainer = edit_trainer(stock_splatfacto, tmp_path, scene, "--pipeline.pass-every", 2, "--pipeline.edit-count", 9)
    loop = trainer.edit_loop
    training_step(trainer, STOCK_STEP + 1)
    records = loop.progress.records
    assert len(records) == loop.images.num_views, "a pass over every view at the edit's first step"
    assert all(not math.isnan(record.lpips) for record in records)


def test_splatfacto_on_a_dataset_without_points_says_once_that_it_starts_from_random_gaussians(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_shown", set())
    box = SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))

    def build(config: SplatModelConfig) -> int:
        model = config.setup(scene_box=box, num_train_data=4, metadata={}, device="cpu", seed_points=None)
        return model.num_points

    assert build(SplatModelConfig(num_random=50)) == build(SplatModelConfig(num_random=50)) == 50
    said = " ".join(capsys.readouterr().out.split())
    assert said.count("the dataset has no 3D points") == 1, "said once"
    assert "starts from 50 random Gaussians" in said and "ns-process-data" in said
    monkeypatch.setattr(console, "_shown", set())
    assert build(SplatModelConfig(num_random=50, random_init=True)) == 50, "asked for"
    assert build(In2nSplatModelConfig(num_random=50)) == 50, "an edit's Gaussians come from its checkpoint"
    assert "no 3D points" not in capsys.readouterr().out


def test_an_edit_box_limits_a_splat_edit_to_the_pixels_whose_surface_lies_in_it(
    stock_splatfacto: Path, scene: Path, tmp_path: Path
) -> None:
    """The box is the half-space x < 0 of the frame the run trained in; a pass edits every view at the first step."""
    box = [-100, -100, -100, 0, 100, 100]
    trainer = edit_trainer(stock_splatfacto, tmp_path, scene, "--pipeline.pass-every", 2, "--pipeline.edit-count", 18,
                           "--pipeline.edit-box", *box)  # fmt: skip
    pipeline = trainer.pipeline
    views = range(pipeline.training_images.num_views)
    points = {view: pipeline.render_for_edit(view, with_points=True).points for view in views}
    training_step(trainer, STOCK_STEP + 1)
    images = pipeline.training_images
    inside_seen = outside_seen = 0
    for view in views:
        changed = (images.current_rgb(view) - images.original_rgb(view)).abs().amax(dim=-1) > 1e-4
        x = points[view][..., 0].numpy()
        square = ndimage.generate_binary_structure(2, 2)  # the feather grows by the chessboard distance
        inside = ndimage.binary_erosion(x < 0, square, iterations=1)
        outside = ~ndimage.binary_dilation(x < 0, square, iterations=FEATHER_PX)
        assert changed[torch.from_numpy(inside)].all(), f"view {view}: part of the box left unedited"
        assert not changed[torch.from_numpy(outside)].any(), f"view {view}: edited outside the box"
        inside_seen, outside_seen = inside_seen + inside.sum(), outside_seen + outside.sum()
    assert inside_seen > 1000 and outside_seen > 1000, "both sides of the box are seen"
