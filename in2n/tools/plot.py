"""`in2n-plot`: the edit's progress as a picture, edit_progress.png in the run folder.

Each dot is one edit: how well the render the edit started from agrees with the image written back (PSNR, higher:
the scene already holds the edit there). The line is the mean over the last pass (as many edits as views), the
squares the mean of each full pass, and the dashed line the step at which the convergence criterion held (with the
run's --pipeline.min-passes and --pipeline.converge-tolerance). With LPIPS on, a second panel shows its running mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from in2n.dataset_update.progress import CSV_NAME, EditProgress, ProgressRecord, read_progress_csv
from in2n.errors import In2nError
from in2n.runs.folder import RunFolder, read_run_folder

PLOT_NAME = "edit_progress.png"


@dataclass
class PlotConfig:
    """Plot how an in2n edit progressed (edit_progress.csv of its run folder) as edit_progress.png."""

    run: tyro.conf.Positional[Path]
    """The run folder of an `ns-train in2n` run (or its config.yml)."""
    output: Optional[Path] = None
    """Where to write the PNG; default: edit_progress.png in the run folder."""


@dataclass
class Curves:
    """What the plot shows, computed from the records."""

    records: List[ProgressRecord]
    running_steps: List[int]
    running_psnr: List[float]
    running_lpips: List[float]
    pass_steps: Dict[int, int]
    """The step of each completed pass's last edit."""
    pass_psnr: Dict[int, float]
    converged_step: Optional[int]


def curves(records: List[ProgressRecord], min_passes: int, tolerance: float) -> Curves:
    """Replay the records through the run's convergence criterion."""
    num_views = len({r.view for r in records})
    progress = EditProgress(num_views, min_passes, tolerance)
    running_steps, running_psnr, running_lpips, last_step = [], [], [], {}
    converged = None
    for record in records:
        progress.add(record)
        last_step[record.pass_index] = record.step
        running_steps.append(record.step)
        running_psnr.append(progress.running_psnr())
        running_lpips.append(progress.running_lpips())
        found = progress.check(record.step)
        converged = converged if converged is not None or found is None else found.step
    steps = {p: last_step[p] for p in progress.pass_psnr}
    return Curves(records, running_steps, running_psnr, running_lpips, steps, dict(progress.pass_psnr), converged)


def plot(data: Curves, title: str, output: Path) -> Path:
    """Draw the curves into a PNG of 1000 x 560 px (one panel) or 1000 x 800 px (with LPIPS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_lpips = any(not math.isnan(v) for v in data.running_lpips)
    figure, axes = plt.subplots(
        2 if with_lpips else 1, 1, figsize=(10, 8 if with_lpips else 5.6), dpi=100, sharex=True, squeeze=False
    )
    top = axes[0, 0]
    top.scatter([r.step for r in data.records], [r.psnr for r in data.records], s=6, color="0.7", label="one edit")
    top.plot(data.running_steps, data.running_psnr, color="tab:blue", linewidth=2, label="mean over the last pass")
    passes = sorted(data.pass_steps)
    top.plot([data.pass_steps[p] for p in passes], [data.pass_psnr[p] for p in passes], "s", color="tab:orange",
             markersize=6, label="mean of a full pass")  # fmt: skip
    if data.converged_step is not None:
        for axis in axes[:, 0]:
            axis.axvline(data.converged_step, color="tab:green", linestyle="--")
        # Left of the line: a run that stopped there ends at it, and text right of it would leave the picture.
        top.text(data.converged_step, top.get_ylim()[1], f"converged (step {data.converged_step}) ",
                 color="tab:green", ha="right", va="top")  # fmt: skip
    top.set_ylabel("render vs. edit, PSNR (dB)")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="lower right")
    if with_lpips:
        bottom = axes[1, 0]
        bottom.plot(data.running_steps, data.running_lpips, color="tab:purple", linewidth=2)
        bottom.set_ylabel("render vs. edit, LPIPS (lower: closer)")
        bottom.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("training step")
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return output


def plot_run(run: RunFolder, output: Optional[Path] = None) -> Path:
    """edit_progress.png of a run (from its edit_progress.csv)."""
    if not run.is_edit:
        raise In2nError(
            f"{run.config_file} is a {run.config.method_name} run, which records no edit progress. Pass the folder of "
            "an `ns-train in2n` run."
        )
    csv_path = run.folder / CSV_NAME
    if not csv_path.is_file():
        raise In2nError(
            f"{run.folder} holds no {CSV_NAME}: the run recorded no edit yet (it writes one row per edited view from "
            "its first edit on). Let it edit, or pass the folder of another run."
        )
    records = read_progress_csv(csv_path)
    if not records:
        raise In2nError(f"{csv_path} holds no edit yet. Let the run edit a few views, then plot again.")
    pipeline = run.config.pipeline
    data = curves(records, pipeline.min_passes, pipeline.converge_tolerance)
    title = f'"{pipeline.prompt}" ({run.folder.name})'
    return plot(data, title, output or run.folder / PLOT_NAME)


def entrypoint() -> None:
    """Command-line entry point of ``in2n-plot``."""
    config = tyro.cli(PlotConfig)
    path = plot_run(read_run_folder(config.run, "in2n-plot"), config.output)
    CONSOLE.print(f"Edit progress plotted in {path}")
