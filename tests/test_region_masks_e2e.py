"""An edit limited to the dataset's masks, with the real ns-train, judged on renders of the views against the masks."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from in2n.dataset_update.region import FEATHER_PX
from in2n.synthetic.scene import write_scene
from tests.conftest import SCENE, in2n_args, in2n_run_dir, run
from tests.regions import (
    EDIT_OPTIONS,
    REGION_EDIT_STEPS,
    REGION_OBJECT,
    STRONG_EDITS,
    judge_region,
    scene_views,
)

pytestmark = pytest.mark.e2e


def test_dataset_masks_limit_the_edit(depth_run: Path, depth_scene: Path, workdir: Path, tmp_path_factory):
    masked = tmp_path_factory.mktemp("masked-scene")
    write_scene(masked, replace(SCENE, depth=True, mask_object=REGION_OBJECT))
    assert all((masked / "images" / p.name).read_bytes() == p.read_bytes() for p in (depth_scene / "images").iterdir())
    run(in2n_args(depth_run, workdir, "masks", "--max-num-iterations", REGION_EDIT_STEPS, *EDIT_OPTIONS,
                  *STRONG_EDITS, "--pipeline.edit-masks", "dataset", "nerfstudio-data", "--data", masked),
        cwd=workdir)  # fmt: skip
    after = scene_views(in2n_run_dir(workdir, "masks"), workdir, "masks")
    before = scene_views(depth_run.parent, workdir, "depth-nerfacto")
    inside = {name: np.asarray(Image.open(masked / "masks" / name)) > 127 for name in after}
    cores = {name: ndimage.binary_erosion(mask, iterations=2) for name, mask in inside.items()}
    fars = {name: ~ndimage.binary_dilation(mask, iterations=FEATHER_PX + 4) for name, mask in inside.items()}
    judge_region(masked, cores, fars, before, after)
    shutil.rmtree(masked)
