"""The five method names resolve to this plugin's configs, not to nerfstudio's install placeholders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig
from nerfstudio.configs.method_configs import all_descriptions, all_methods

from in2n.pipeline import In2nPipelineConfig
from in2n.splat.model import SplatModelConfig
from in2n.splat.pipeline import In2nSplatPipelineConfig
from in2n.trainer import In2nTrainerConfig
from tests.conftest import ns
from tests.helpers import flat

# name: (InstructPix2Pix in fp32, LPIPS, rays per step)
VARIANTS = {
    "in2n-big": (True, True, 16384),
    "in2n": (False, True, 16384),
    "in2n-small": (False, True, 16384),
    "in2n-lite": (False, False, 4096),
    "in2n-tiny": (False, False, 4096),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_name_is_our_config_with_its_variant_options(name: str) -> None:
    config = all_methods[name]
    assert not isinstance(config, ExternalMethodDummyTrainerConfig), "nerfstudio's placeholder won"
    assert isinstance(config, In2nTrainerConfig) and isinstance(config.pipeline, In2nPipelineConfig)
    assert config.method_name == name
    full_precision, lpips, rays = VARIANTS[name]
    pipeline = config.pipeline
    assert pipeline.ip2p_use_full_precision is full_precision
    assert pipeline.model.use_lpips is lpips
    assert pipeline.datamanager.train_num_rays_per_batch == rays
    assert pipeline.model.patch_size == pipeline.datamanager.patch_size == (32 if lpips else 1)
    assert "Instruct-NeRF2NeRF" in all_descriptions[name] or "Alias of" in all_descriptions[name]


def test_aliases_equal_their_variants_but_for_the_name() -> None:
    for alias, target in (("in2n-small", "in2n"), ("in2n-tiny", "in2n-lite")):
        assert all_methods[alias].pipeline == all_methods[target].pipeline
        assert all_methods[alias].optimizers == all_methods[target].optimizers


def test_variants_share_the_base_everywhere_else() -> None:
    big, lite = all_methods["in2n-big"], all_methods["in2n-lite"]
    assert big.pipeline.prompt == lite.pipeline.prompt and big.pipeline.edit_rate == lite.pipeline.edit_rate == 10
    assert big.max_num_iterations == lite.max_num_iterations


@pytest.mark.parametrize("name, views_per_call", [("in2n-splat", 4), ("in2n-splat-lite", 1)])
def test_the_splat_edits_resolve_to_our_config_with_instruct_gs2gs_schedule(name: str, views_per_call: int) -> None:
    config = all_methods[name]
    assert isinstance(config, In2nTrainerConfig) and isinstance(config.pipeline, In2nSplatPipelineConfig)
    pipeline = config.pipeline
    assert (pipeline.edit_schedule, pipeline.pass_every, pipeline.edit_count) == ("passes", 2500, views_per_call)
    assert config.max_num_iterations == 7500 and pipeline.lower_bound == 0.7
    assert pipeline.ip2p_use_full_precision is False
    assert config.optimizers == all_methods["splatfacto"].optimizers, "splatfacto's own learning rates"


def test_in2n_splatfacto_trains_what_splatfacto_trains() -> None:
    ours, theirs = all_methods["in2n-splatfacto"], all_methods["splatfacto"]
    assert ours.optimizers == theirs.optimizers and ours.max_num_iterations == theirs.max_num_iterations
    assert isinstance(ours.pipeline.model, SplatModelConfig)
    assert ours.pipeline.datamanager.dataparser.load_3D_points is True


@pytest.mark.e2e
def test_ns_train_help_lists_the_five_methods() -> None:
    result = subprocess.run([ns("ns-train"), "-h"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = flat(result.stdout.replace("│", " "))  # the help's box borders split wrapped descriptions
    for name, description in all_descriptions.items():
        if name in VARIANTS:
            assert f"{name} {flat(description)}" in text, name
            assert f"{name} [External" not in text, f"nerfstudio's install placeholder for {name} is listed"


@pytest.mark.e2e
def test_ns_train_in2n_help_shows_our_options_not_an_install_hint() -> None:
    result = subprocess.run([ns("ns-train"), "in2n", "-h"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = flat(result.stdout)
    for option in ("--pipeline.prompt", "--pipeline.guidance-scale", "--pipeline.image-guidance-scale",
                   "--pipeline.ip2p-model", "--pipeline.ip2p-device", "--pipeline.seed"):  # fmt: skip
        assert option in text, option
    assert "git+https://github.com/ayaanzhaque/instruct-nerf2nerf" not in text


@pytest.mark.e2e
def test_importing_the_plugin_only_lets_nerfstudio_load_its_checkpoints(tmp_path: Path) -> None:
    """Every ns-* command imports every plugin: discovery lets torch's safe loader read a nerfacto checkpoint (numpy
    scalars in its scheduler state), while in2n's console is set up by its own methods and commands only. Checked in
    a fresh interpreter, as nerfstudio imports it while listing methods."""
    checkpoint = tmp_path / "step-000000029.ckpt"
    torch.save({"step": 29, "schedulers": {"fields": {"base_lrs": [np.float64(0.01)]}}}, checkpoint)
    script = f"""
import sys, warnings, torch
from nerfstudio.configs.method_configs import all_methods
assert "in2n" in all_methods, "the plugin was discovered"
loaded = torch.load({str(checkpoint)!r}, map_location="cpu")
assert loaded["schedulers"]["fields"]["base_lrs"] == [0.01], loaded
assert not getattr(sys.excepthook, "_in2n", False), "excepthook installed on import"
ours = [f for f in warnings.filters if "diffusers" in str(getattr(f[3], "pattern", f[3]))]
assert not ours, "warning filters installed on import"
from in2n.process import prepare_process
prepare_process()
assert getattr(sys.excepthook, "_in2n", False)
assert any("diffusers" in str(getattr(f[3], "pattern", f[3])) for f in warnings.filters)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
