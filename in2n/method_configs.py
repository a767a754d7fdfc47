"""The methods `ns-train` lists: in2n-big, in2n, in2n-lite, the names nerfstudio's docs use for them, the splat
edits in2n-splat and in2n-splat-lite, and in2n-splatfacto, the splatfacto they edit on machines without a GPU.

| method    | alias      | InstructPix2Pix | LPIPS | rays/step (micro-batches) | GPU memory |
|-----------|------------|-----------------|-------|---------------------------|------------|
| in2n-big  |            | fp32            | yes   | 16384 (4)                 | < 15 GB    |
| in2n      | in2n-small | fp16            | yes   | 16384 (4)                 | < 12 GB    |
| in2n-lite | in2n-tiny  | fp16            | no    | 4096 (1)                  | < 10 GB    |

| method          | edits      | InstructPix2Pix | schedule                    | views per diffusion call |
|-----------------|------------|-----------------|-----------------------------|--------------------------|
| in2n-splat      | splatfacto | fp16            | every view every 2500 steps | 4                        |
| in2n-splat-lite | splatfacto | fp16            | every view every 2500 steps | 1                        |

Whole images (the view to edit, nerfstudio's eval images, the viewer) are rendered 4096 rays at a time: with
nerfacto's pure-torch hash grid, a 512x384 view rendered 32768 rays at a time (nerfacto's default) took 9.9 GB more
than the training step before it (measured on the CPU, bench/README.md). Training steps of 16384 rays run as four
micro-batches of 4096 rays with accumulated gradients (`--pipeline.ray-chunks`, chosen from the rays per step), the
same step in a quarter of the activation memory.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict

from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from in2n.data.datamanager import In2nDataManagerConfig
from in2n.model import RENDER_CHUNK_RAYS, In2nModelConfig
from in2n.pipeline import In2nPipelineConfig
from in2n.runs.compat import allow_numpy_in_checkpoints
from in2n.splat.datamanager import In2nSplatDataManagerConfig
from in2n.splat.model import In2nSplatModelConfig, SplatModelConfig
from in2n.splat.pipeline import In2nSplatPipelineConfig
from in2n.trainer import In2nTrainerConfig

# nerfstudio imports this module in every ns-* command while it lists methods. The one thing done here is to let
# torch's safe loader read the numpy scalars nerfstudio 1.1.5 writes into every checkpoint: without it, `ns-render`,
# `ns-eval` and `ns-viewer` cannot open the nerfacto run an edit starts from (in2n-compare renders it). It only
# widens torch's allow-list by those numpy types; the console and warnings stay untouched (in2n.process).
allow_numpy_in_checkpoints()


def base_config(method_name: str) -> In2nTrainerConfig:
    """The full method (in2n-big); the variants change a few options of it."""
    return In2nTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=1000,
        steps_per_eval_image=100,
        steps_per_save=250,
        max_num_iterations=15000,
        save_only_latest_checkpoint=True,
        mixed_precision=True,
        pipeline=In2nPipelineConfig(
            datamanager=In2nDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(),
                train_num_rays_per_batch=16384,
                eval_num_rays_per_batch=4096,
                patch_size=32,
            ),
            model=In2nModelConfig(
                eval_num_rays_per_chunk=RENDER_CHUNK_RAYS,
                use_lpips=True,
                patch_size=32,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
            ip2p_use_full_precision=True,
        ),
        optimizers={
            "proposal_networks": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": None},
            "fields": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": None},
            "camera_opt": {
                "optimizer": AdamOptimizerConfig(lr=6e-4, eps=1e-8, weight_decay=1e-2),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=6e-6, max_steps=10000),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=RENDER_CHUNK_RAYS),
        vis="viewer",
    )


def half_precision(config: In2nTrainerConfig) -> In2nTrainerConfig:
    config.pipeline.ip2p_use_full_precision = False
    return config


def without_lpips(config: In2nTrainerConfig) -> In2nTrainerConfig:
    """Single rays instead of patches, and a quarter of the rays: the memory LPIPS needed is not spent."""
    config.pipeline.model.use_lpips = False
    config.pipeline.model.patch_size = 1
    config.pipeline.datamanager.patch_size = 1
    config.pipeline.datamanager.train_num_rays_per_batch = 4096
    return config


def method(name: str, description: str, *variants) -> MethodSpecification:
    config = base_config(name)
    for variant in variants:
        config = variant(config)
    return MethodSpecification(config=config, description=description)


in2n_big = method("in2n-big", "Instruct-NeRF2NeRF, InstructPix2Pix in full precision, LPIPS (GPU < 15 GB).")
in2n = method("in2n", "Instruct-NeRF2NeRF, InstructPix2Pix in half precision, LPIPS (GPU < 12 GB).", half_precision)
in2n_lite = method(
    "in2n-lite", "Instruct-NeRF2NeRF, half precision, no LPIPS, 4096 rays (GPU < 10 GB).", half_precision, without_lpips
)
in2n_small = MethodSpecification(
    config=replace(in2n.config, method_name="in2n-small"), description="Alias of in2n (name used by nerfstudio's docs)."
)
in2n_tiny = MethodSpecification(
    config=replace(in2n_lite.config, method_name="in2n-tiny"),
    description="Alias of in2n-lite (name used by nerfstudio's docs).",
)


# ----------------------------------------------------------------------------------------------------------------
# Gaussian splats.

SPLAT_PASS_EVERY = 2500
"""Steps between two passes over every view, and a third of the edit's length: Instruct-GS2GS's schedule (every view
edited at the start and every 2500 steps, 7500 steps in all)."""
SPLAT_LOWER_BOUND = 0.7
"""Instruct-GS2GS's lowest noise level: with a few passes, every edit of a pass must change its view markedly (at
Instruct-NeRF2NeRF's 0.02, part of each pass would barely move towards the instruction)."""


def splatfacto_optimizers() -> Dict[str, Dict[str, Any]]:
    """splatfacto's optimizers in nerfstudio 1.1.5 (nerfstudio.configs.method_configs, which a plugin cannot import:
    it discovers the plugins while it is being imported)."""
    return {
        "means": {
            "optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000),
        },
        "features_dc": {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None},
        "features_rest": {"optimizer": AdamOptimizerConfig(lr=0.0025 / 20, eps=1e-15), "scheduler": None},
        "opacities": {"optimizer": AdamOptimizerConfig(lr=0.05, eps=1e-15), "scheduler": None},
        "scales": {"optimizer": AdamOptimizerConfig(lr=0.005, eps=1e-15), "scheduler": None},
        "quats": {"optimizer": AdamOptimizerConfig(lr=0.001, eps=1e-15), "scheduler": None},
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(
                lr_final=5e-7, max_steps=30000, warmup_steps=1000, lr_pre_warmup=0
            ),
        },
        "bilateral_grid": {
            "optimizer": AdamOptimizerConfig(lr=2e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(
                lr_final=1e-4, max_steps=30000, warmup_steps=1000, lr_pre_warmup=0
            ),
        },
    }


def splat_config(method_name: str, edit_count: int) -> In2nTrainerConfig:
    """An edit of a splatfacto run, the Instruct-GS2GS way: every view edited every SPLAT_PASS_EVERY steps."""
    return In2nTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=250,
        max_num_iterations=3 * SPLAT_PASS_EVERY,
        save_only_latest_checkpoint=True,
        mixed_precision=False,
        pipeline=In2nSplatPipelineConfig(
            datamanager=In2nSplatDataManagerConfig(dataparser=NerfstudioDataParserConfig()),
            model=In2nSplatModelConfig(),
            edit_schedule="passes",
            pass_every=SPLAT_PASS_EVERY,
            edit_count=edit_count,
            lower_bound=SPLAT_LOWER_BOUND,
            ip2p_use_full_precision=False,
        ),
        optimizers=splatfacto_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


in2n_splat = MethodSpecification(
    config=splat_config("in2n-splat", edit_count=4),
    description="Edit Gaussian splats (splatfacto): every view every 2500 steps, 4 per diffusion call, fp16.",
)
in2n_splat_lite = MethodSpecification(
    config=splat_config("in2n-splat-lite", edit_count=1),
    description="Edit Gaussian splats (splatfacto): every view every 2500 steps, one per diffusion call, fp16.",
)
in2n_splatfacto = MethodSpecification(
    config=TrainerConfig(
        method_name="in2n-splatfacto",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=30000,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True), cache_images_type="uint8"
            ),
            model=SplatModelConfig(),
        ),
        optimizers=splatfacto_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    ),
    description="splatfacto that also trains on the CPU (gsplat's kernels on CUDA, torch elsewhere): the splats "
    "in2n-splat edits on a machine without a GPU.",
)
