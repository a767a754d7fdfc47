"""`ns-train in2n` on a checkpoint that does not fit the data or the model options: one paragraph naming what
differs and what to pass instead, printed before any training, without a traceback."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from in2n.synthetic.scene import write_scene
from tests.conftest import SCENE, in2n_args, run
from tests.helpers import flat

pytestmark = pytest.mark.e2e


def failed_edit(load_dir: Path, workdir: Path, name: str, data: Path, *options: Any) -> str:
    """The console text of an `ns-train in2n` that must stop with our error."""
    result = run(in2n_args(load_dir, workdir, name, "--pipeline.editor", "negative", *options,
                           "nerfstudio-data", "--data", data), cwd=workdir, check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "in2n: error:" in result.stderr and "Traceback" not in output, output[-3000:]
    return flat(result.stderr)


def other_scene(folder: Path, **changes: Any) -> Path:
    write_scene(folder, dataclasses.replace(SCENE, **changes))
    return folder


def test_data_with_other_views_than_the_checkpoint(nerfacto_run: Path, workdir: Path, tmp_path: Path) -> None:
    data = other_scene(tmp_path / "ten-views", num_views=10)
    message = failed_edit(nerfacto_run, workdir, "fewer-views", data)
    assert "was trained on 18 training views, but --data gives 9" in message
    assert "Use the same --data" in message


def test_model_options_other_than_the_checkpoints(nerfacto_run: Path, scene: Path, workdir: Path) -> None:
    message = failed_edit(nerfacto_run, workdir, "wider", scene, "--pipeline.model.hidden-dim", "64")
    assert "was trained with different model options" in message
    assert "--pipeline.model.hidden-dim 32" in message


def test_resuming_an_edit_on_images_of_another_size(negative_run: Path, workdir: Path, tmp_path: Path) -> None:
    data = other_scene(tmp_path / "larger", width=80, height=60)
    message = failed_edit(negative_run / "nerfstudio_models", workdir, "larger", data)
    assert "was edited on images of 64x48 pixels (width x height), but --data gives 80x60" in message
    assert "--downscale-factor" in message


def test_an_edit_runs_the_weights_with_the_density_scale_of_the_run_it_edits() -> None:
    from nerfstudio.models.depth_nerfacto import DepthNerfactoModelConfig
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from in2n.model import In2nModelConfig
    from in2n.runs.mismatch import source_model_options

    assert source_model_options(DepthNerfactoModelConfig(), In2nModelConfig()) == {"average_init_density": 1.0}
    assert source_model_options(NerfactoModelConfig(average_init_density=0.01), In2nModelConfig()) == {}
