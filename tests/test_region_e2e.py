"""An edit limited to a box in the scene, with the real ns-train, judged on renders of the views against where the
box is. (Dataset masks: test_region_masks_e2e.py, a module of its own so that the two edits run side by side.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from in2n.dataset_update.region import FEATHER_PX
from in2n.synthetic.scene import object_bounds, surface_points
from tests.conftest import SCENE, in2n_args, in2n_run_dir, run
from tests.helpers import flat
from tests.regions import (
    BOX_MARGIN,
    EDIT_OPTIONS,
    REGION_EDIT_STEPS,
    REGION_OBJECT,
    STRONG_EDITS,
    judge_region,
    scene_views,
)

pytestmark = pytest.mark.e2e


def test_an_edit_box_changes_only_what_lies_in_the_box(depth_run: Path, depth_scene: Path, workdir: Path):
    low, high = object_bounds(SCENE, REGION_OBJECT)
    frame = json.loads((depth_run.parent / "dataparser_transforms.json").read_text())
    transform, scale = np.array(frame["transform"]), frame["scale"]
    corners = np.array([[x, y, z] for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    trained = scale * (corners @ transform[:3, :3].T + transform[:3, 3])  # the frame the run trained in
    margin = BOX_MARGIN * scale  # room for the NeRF's depth error
    box = [*(trained.min(axis=0) - margin), *(trained.max(axis=0) + margin)]
    result = run(in2n_args(depth_run, workdir, "box", "--max-num-iterations", REGION_EDIT_STEPS, *EDIT_OPTIONS,
                           *STRONG_EDITS, "--pipeline.edit-box", *[f"{v:.5f}" for v in box],
                           "nerfstudio-data", "--data", depth_scene), cwd=workdir)  # fmt: skip
    # depth-nerfacto's field scales densities by 1.0, nerfacto's (and in2n's default) by 0.01: the edit takes its value.
    assert "trained with --pipeline.model.average-init-density 1.0" in flat(result.stdout)
    assert "average_init_density: 1.0" in (in2n_run_dir(workdir, "box") / "config.yml").read_text()
    after = scene_views(in2n_run_dir(workdir, "box"), workdir, "box")
    before = scene_views(depth_run.parent, workdir, "depth-nerfacto")
    transforms = json.loads((depth_scene / "transforms.json").read_text())["frames"]
    transforms = {Path(f["file_path"]).name: f for f in transforms}
    cores, fars = {}, {}
    for name in after:
        points = surface_points(SCENE, np.array(transforms[name]["transform_matrix"]))
        on_sphere = np.all((points >= low + 0.03) & (points <= high - 0.03), axis=-1)  # not the ground under it
        near_box = np.all((points >= low - BOX_MARGIN - 0.1) & (points <= high + BOX_MARGIN + 0.1), axis=-1)
        cores[name] = ndimage.binary_erosion(on_sphere, iterations=1)
        fars[name] = ~ndimage.binary_dilation(near_box, iterations=FEATHER_PX + 4)
    judge_region(depth_scene, cores, fars, before, after)
