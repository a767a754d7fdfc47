"""The edit's progress: agreement records, pass means, the convergence criterion, edit_progress.csv, the plot."""

from __future__ import annotations

import math
from dataclasses import astuple
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, EditLoopConfig, ViewRender
from in2n.dataset_update.progress import EditProgress, ProgressCsv, ProgressRecord, pooled_psnr, psnr, read_progress_csv
from in2n.editors.negative import NegativeEditor
from in2n.tools.plot import curves, plot

NUM_VIEWS = 4


def records_with_pass_means(means: List[float], views: int = NUM_VIEWS) -> List[ProgressRecord]:
    """One record per view and pass, every edit of a pass at its PSNR; steps count edits."""
    records, step = [], 0
    for index, pass_psnr in enumerate(means):
        for view in range(views):
            step += 1
            records.append(ProgressRecord(step, view, index, 100 * view, pass_psnr, 0.5 - pass_psnr / 100))
    return records


def test_a_pass_pools_the_squared_errors_of_its_edits() -> None:
    assert pooled_psnr([10.0, 10.0]) == pytest.approx(10.0)
    # MSE 0.1 and 0.001: the pass's MSE is their mean, 0.0505, which a plain mean of the PSNRs (20 dB) hides.
    assert pooled_psnr([10.0, 30.0]) == pytest.approx(-10 * math.log10(0.0505))
    assert math.isnan(pooled_psnr([]))


def test_psnr_of_known_images() -> None:
    a = torch.zeros(3, 4, 4)
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, a) == 100.0, "identical images get a finite ceiling"


def test_a_pass_mean_is_known_once_the_next_pass_begins_and_the_criterion_follows_it() -> None:
    progress = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.5)
    records = records_with_pass_means([10.0, 14.0, 16.0, 16.2, 16.3])
    for record in records[: 2 * NUM_VIEWS]:
        progress.add(record)
    assert progress.pass_psnr == {0: pytest.approx(10.0)}, "pass 1 is not complete until pass 2 begins"
    found = []
    for record in records[2 * NUM_VIEWS :]:
        progress.add(record)
        found.append(progress.check(record.step))
    # Pass means: 10, 14, 16, 16.2 (+0.2 < 0.5 -> converged once pass 4 is complete, at the first edit of pass 5).
    first = next(i for i, c in enumerate(found) if c is not None)
    convergence = found[first]
    assert records[2 * NUM_VIEWS + first].pass_index == 4 and convergence.step == 4 * NUM_VIEWS + 1
    assert convergence.pass_index == 3 and convergence.trend == pytest.approx(0.2)
    assert progress.running_psnr() == pytest.approx(16.3)


def test_a_drop_is_no_convergence() -> None:
    progress = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.5)
    for record in records_with_pass_means([20.0, 17.0, 14.0, 13.9, 13.9]):
        progress.add(record)
        if progress.check(record.step) is not None:
            break
    assert progress.convergence is not None and progress.convergence.pass_index == 3
    assert progress.convergence.trend == pytest.approx(-0.1)


def test_the_trend_of_several_passes_outlasts_one_flat_pass() -> None:
    # Rising by about a dB a pass with one flat pass (3 to 4), then level: judged over 4 passes, only the level counts.
    means = [10.0, 11.0, 12.0, 13.0, 13.0, 14.0, 15.0, 15.1, 15.0, 15.1, 15.05, 15.1]
    progress = EditProgress(NUM_VIEWS, min_passes=4, tolerance=0.1)
    for record in records_with_pass_means(means):
        progress.add(record)
        if progress.check(record.step) is not None:
            break
    assert progress.convergence is not None and progress.convergence.pass_index == 9
    single = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.1)
    for record in records_with_pass_means(means):
        single.add(record)
        if single.check(record.step) is not None:
            break
    assert single.convergence is not None and single.convergence.pass_index == 4, "one flat pass fools two"


def test_an_edit_that_keeps_improving_or_changed_its_settings_does_not_converge() -> None:
    rising = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.5)
    for record in records_with_pass_means([10.0, 12.0, 14.0, 16.0, 18.0]):
        rising.add(record)
        assert rising.check(record.step) is None
    changed = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.5)
    for record in records_with_pass_means([10.0, 14.0, 14.1, 14.1, 14.2]):
        if record.pass_index == 1 and record.view == 1:
            changed.restart(1)  # the prompt changed in the middle of pass 2: passes 3 and 4 are compared first
        changed.add(record)
        if changed.check(record.step) is not None:
            break
    assert changed.convergence is not None and changed.convergence.pass_index == 3


def test_min_passes_holds_the_criterion_back() -> None:
    progress = EditProgress(NUM_VIEWS, min_passes=4, tolerance=0.5)
    for record in records_with_pass_means([10.0, 10.1, 10.2, 10.3, 10.4]):
        progress.add(record)
        if progress.check(record.step) is not None:
            break
    assert progress.convergence is not None and progress.convergence.pass_index == 3


def test_progress_state_round_trips(tmp_path: Path) -> None:
    progress = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.5)
    for record in records_with_pass_means([10.0, 10.1, 10.2]):
        progress.add(record)
        progress.check(record.step)
    fresh = EditProgress(NUM_VIEWS, min_passes=2, tolerance=0.5)
    torch.save(progress.state_dict(), tmp_path / "state.pt")  # as a checkpoint holds it
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert fresh.records == progress.records and fresh.pass_psnr == progress.pass_psnr
    assert fresh.convergence == progress.convergence is not None


def test_the_csv_is_written_whole_then_appended(tmp_path: Path) -> None:
    records = records_with_pass_means([10.0, 12.0])
    log = ProgressCsv(tmp_path / "edit_progress.csv")
    log.write_all(records[:3])
    log.append(records[3:])
    read = read_progress_csv(log.path)
    assert [astuple(r)[:4] for r in read] == [astuple(r)[:4] for r in records]
    for a, b in zip(read, records, strict=True):
        assert abs(a.psnr - b.psnr) < 1e-3 and abs(a.lpips - b.lpips) < 1e-4
    log.write_all(records[:1])  # a resumed run rewrites it from its checkpoint
    assert len(read_progress_csv(log.path)) == 1


def test_the_loop_records_each_edit_and_logs_it(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = TrainingImages(torch.rand(NUM_VIEWS, 8, 10, 3, generator=generator))
    renders = torch.rand(NUM_VIEWS, 8, 10, 3, generator=generator)
    config = EditLoopConfig(edit_rate=1, edit_count=2)
    perceptual_calls = []

    def perceptual(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        perceptual_calls.append(a.shape)
        return (a - b).abs().flatten(1).mean(dim=1)

    loop = EditLoop(config, NegativeEditor(), lambda v, p: ViewRender(renders[v]), images, perceptual=perceptual)
    path = loop.log_progress_to(tmp_path)
    for step in range(3):
        loop.before_step(step)
    rows = read_progress_csv(path)
    assert [r.step for r in rows] == [0, 0, 1, 1, 2, 2] and [r.pass_index for r in rows] == [0, 0, 0, 0, 1, 1]
    # The views of a pass take the noise range's four strata, each once (bounds 0.02-0.98: timesteps 20 to 980).
    strata = sorted((r.noise_level - 20) * 4 // 961 for r in rows[:4])
    assert strata == [0, 1, 2, 3]
    last = {row.view: row for row in rows}  # the newest record of a view belongs to the image it holds now
    for view, row in last.items():
        assert row.psnr == pytest.approx(psnr(renders[view], images.current_rgb(view)), abs=1e-3)
    assert len(perceptual_calls) == 6 and not math.isnan(rows[0].lpips)
    assert loop.summary().agreement.startswith("agreement ")


def test_the_plot_is_a_picture_of_the_curves(tmp_path: Path) -> None:
    data = curves(records_with_pass_means([10.0, 14.0, 16.0, 16.2, 16.3]), min_passes=2, tolerance=0.5)
    assert data.converged_step == 4 * NUM_VIEWS + 1 and data.pass_psnr[1] == pytest.approx(14.0)
    path = plot(data, '"make it gold" (run)', tmp_path / "edit_progress.png")
    image = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert image.shape == (800, 1000, 3), "two panels: PSNR and LPIPS"
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50, "not a blank picture"
