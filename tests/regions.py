"""What the region tests share: the options of their edits, renders of a run's training views, and how a region edit
is judged against where the region is."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import numpy as np
from filelock import FileLock

from tests.conftest import NEGATIVE_OPTIONS, ns, run
from tests.helpers import read_rgb

EDIT_OPTIONS = NEGATIVE_OPTIONS
STRONG_EDITS = ["--pipeline.lower-bound", "0.5"]
"""Edits that move each view at least half way to the target, so that a region converges within the test's steps
however well the small nerfacto placed its surfaces."""
REGION_OBJECT = 2
"""The object the regions hold: the largest sphere of the scene (about 7% of a view)."""
REGION_EDIT_STEPS = 200
BOX_MARGIN = 0.15
"""World units between the sphere and the edit box."""
SHOWN_ERROR = 0.05
"""Mean squared colour error under which a pixel of a render shows what the original shows."""


def scene_views(run_dir: Path, workdir: Path, name: str) -> Dict[str, np.ndarray]:
    """A run's renders of the scene's training views (ns-render dataset --split train), by file name; rendered once
    for the tests of both workers (the render before the edit is every region test's)."""
    output = workdir / f"renders-{name}"
    with FileLock(f"{output}.lock"):
        if not output.exists():
            partial = workdir / f"renders-{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            command = [ns("ns-render"), "dataset", "--load-config", run_dir / "config.yml", "--output-path", partial,
                       "--split", "train", "--rendered-output-names", "rgb", "--image-format", "png"]  # fmt: skip
            run(command, cwd=workdir)
            partial.rename(output)
    return {path.name: read_rgb(path).numpy() for path in sorted(output.rglob("*.png"))}


def judge_region(scene: Path, cores: Dict[str, np.ndarray], fars: Dict[str, np.ndarray], before: dict, after: dict):
    """Where the region surely is (`cores`), the scene now renders the negative target; where it surely is not
    (`fars`: beyond the fade and the NeRF's depth error), it renders as it did before the edit.

    Judged on renders of the training views (with the average appearance code, as ns-render renders any view): the
    small CPU NeRFs render the views they never saw too roughly to find an object in (11-13 dB from the originals;
    the sphere shows in one of the two held-out views, or in none), while they fit their training views (about 21 dB).
    The inside is judged where the render before the edit showed the object (within SHOWN_ERROR of the original),
    over the pixels of all views together. Measured (200 steps of edits): inside, MSE 0.037 to the target against 0.185
    to the original with the box (1675 pixels), 0.044 against 0.210 with dataset masks (2355 pixels); outside, at most
    0.007 from the render before the edit, and 0.05 times as far from the original as from the target.
    """
    inside = {"render": [], "original": []}
    for name, render in after.items():
        original = read_rgb(scene / "images" / name).numpy()
        core, far = cores[name], fars[name]
        assert far.sum() > 1000, (name, far.sum())
        shown = core & (((before[name] - original) ** 2).mean(axis=-1) < SHOWN_ERROR)
        inside["render"].append(render[shown])
        inside["original"].append(original[shown])

        def mse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
            return float(((a - b) ** 2)[where].mean())

        assert mse(render, original, far) < 0.5 * mse(render, 1.0 - original, far), name
        assert mse(render, before[name], far) < 0.03, name
    render, original = np.concatenate(inside["render"]), np.concatenate(inside["original"])
    assert len(render) >= 20, len(render)
    assert ((render - (1.0 - original)) ** 2).mean() < 0.5 * ((render - original) ** 2).mean()
