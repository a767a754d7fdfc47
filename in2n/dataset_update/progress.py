"""How far the scene still is from its edited training views, edit by edit, and when the edit has converged.

After each edit of a view, the render the edit started from (the scene as it was just before) is compared with the
image written back: their agreement (PSNR, and LPIPS when the model trains with LPIPS) says how much the edit still
changes the scene. Early on every edit changes a lot; once the scene holds the edit, a new edit of a view mostly agrees
with what the scene already renders there. With a generative editor the agreement levels off below a perfect match,
since two edits of the same view differ; what says "converged" is that it stops improving.

How much one edit changes its view depends mostly on the noise level it starts from (an edit at a low level barely
changes the render, one at a high level remakes it), which is why the loop gives the views of each pass the same
spread of noise levels (see `in2n.editors.base.stratified_noise_level`) and why a pass's agreement is the PSNR of
its edits' mean squared error taken together, which the few edits at the lowest levels do not dominate.

The criterion: each full pass edits every view once; a pass's agreement is known once the next pass's first edit is
written. The edit has converged when the trend of the last `min_passes` full passes' agreement (counted since the
edit's settings last changed), the least-squares slope through them, is within `tolerance` dB per pass, up or down
(a drop means the scene is still moving). A trend over several passes rather than the change over the last one: on
the generated 18-view scene, single passes differ by up to 0.9 dB while the agreement still rises by 0.5 dB a pass,
so one flat pass says little.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

CSV_NAME = "edit_progress.csv"
"""The file in the run folder that holds every record, one row per edited view."""


@dataclass(frozen=True)
class ProgressRecord:
    """The agreement of one edit."""

    step: int
    """Training step at which the edit was written into the training images."""
    view: int
    """The training view edited."""
    pass_index: int
    """The pass the view was scheduled in (0 is the first)."""
    noise_level: int
    """The timestep the edit started from (0 to 1000; -1: not recorded)."""
    psnr: float
    """PSNR (dB) between the render the edit started from and the image written back."""
    lpips: float
    """LPIPS between them (lower: more alike); NaN when the model trains without LPIPS."""


@dataclass(frozen=True)
class Convergence:
    """When the edit converged, and the numbers that said so."""

    step: int
    """The step at which the pass that completed the criterion was known (the edit stops after it)."""
    pass_index: int
    """The last full pass of the comparison."""
    pass_psnr: float
    """Its mean PSNR."""
    trend: float
    """The slope of the agreement over the passes judged, in dB per pass (negative: a drop)."""


MAX_PSNR = 100.0
"""PSNR of identical images (instead of infinity, which would make pass means meaningless)."""


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two images in [0, 1], at most MAX_PSNR."""
    mse = float(torch.mean((a.float() - b.float()) ** 2))
    return MAX_PSNR if mse <= 10 ** (-MAX_PSNR / 10) else -10.0 * math.log10(mse)


class EditProgress:
    """The records of a run's edits, their pass means, and the convergence criterion.

    Args:
        num_views: views per pass.
        min_passes: the full passes whose trend is judged (at least 2).
        tolerance: the trend (dB per pass) within which the edit counts as converged.
    """

    def __init__(self, num_views: int, min_passes: int, tolerance: float) -> None:
        self.num_views = num_views
        self.min_passes = min_passes
        self.tolerance = tolerance
        self.records: List[ProgressRecord] = []
        self.pass_psnr: Dict[int, float] = {}
        """Mean PSNR of each completed pass."""
        self._open: Dict[int, List[float]] = {}
        """PSNR of the edits of passes not known to be complete yet."""
        self.first_counted_pass = 0
        """Passes before this one began under other settings and are not counted towards convergence."""
        self.convergence: Optional[Convergence] = None

    def add(self, record: ProgressRecord) -> None:
        """Record an edit; a record of a later pass completes the passes before it."""
        for earlier in sorted(p for p in self._open if p < record.pass_index):
            self.pass_psnr[earlier] = pooled_psnr(self._open.pop(earlier))
        self._open.setdefault(record.pass_index, []).append(record.psnr)
        self.records.append(record)

    def restart(self, pass_index: int) -> None:
        """The edit's settings changed during `pass_index`: count passes towards convergence from the next one."""
        self.first_counted_pass = pass_index + 1
        self.convergence = None

    def check(self, step: int) -> Optional[Convergence]:
        """The convergence, if the criterion holds now (it stays once found, until a restart)."""
        if self.convergence is not None:
            return self.convergence
        window = max(2, self.min_passes)
        counted = sorted(p for p in self.pass_psnr if p >= self.first_counted_pass)[-window:]
        if len(counted) < window:
            return None
        trend = slope(counted, [self.pass_psnr[p] for p in counted])
        if abs(trend) < self.tolerance:
            last = counted[-1]
            self.convergence = Convergence(step, last, self.pass_psnr[last], trend)
        return self.convergence

    def running_psnr(self) -> float:
        """The agreement of the last pass's worth of edits (NaN before the first), pooled as a pass's is."""
        return pooled_psnr([r.psnr for r in self.records[-self.num_views :]])

    def running_lpips(self) -> float:
        return mean(r.lpips for r in self.records[-self.num_views :])

    def summary_text(self) -> str:
        """One line for the viewer: the running agreement and the last full pass's."""
        if not self.records:
            return "agreement: no edit yet"
        text = f"agreement {self.running_psnr():.1f} dB"
        if self.pass_psnr:
            last = max(self.pass_psnr)
            text += f" (pass {last + 1}: {self.pass_psnr[last]:.1f} dB)"
        if self.convergence is not None:
            text += f", converged at step {self.convergence.step}"
        return text

    def state_dict(self) -> Dict[str, Any]:
        """Plain values only (the safe unpickler loads them)."""
        return {
            "records": [list(asdict(r).values()) for r in self.records],
            "first_counted_pass": self.first_counted_pass,
            "convergence": None if self.convergence is None else asdict(self.convergence),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.records, self.pass_psnr, self._open = [], {}, {}
        for values in state["records"]:
            self.add(ProgressRecord(*values))
        self.first_counted_pass = state["first_counted_pass"]
        self.convergence = None if state["convergence"] is None else Convergence(**state["convergence"])


def mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def slope(x: List[int], y: List[float]) -> float:
    """The least-squares slope of y over x."""
    mx, my = sum(x) / len(x), sum(y) / len(y)
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sum((a - mx) ** 2 for a in x)


def pooled_psnr(values: List[float]) -> float:
    """The PSNR of the mean squared error of edits with these PSNRs (NaN for none)."""
    if not values:
        return math.nan
    return -10.0 * math.log10(sum(10 ** (-v / 10.0) for v in values) / len(values))


class ProgressCsv:
    """edit_progress.csv: written whole when a run starts (a resumed run's history included), appended after that.

    The history comes from the checkpoint, so a resumed run's file has every edit up to the checkpoint and none of
    the edits a killed run made after it (the resumed run makes them again).
    """

    COLUMNS = [f.name for f in fields(ProgressRecord)]

    def __init__(self, path: Path) -> None:
        self.path = path

    def write_all(self, records: List[ProgressRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.COLUMNS)
            writer.writerows(row(r) for r in records)
        partial.replace(self.path)

    def append(self, records: List[ProgressRecord]) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerows(row(r) for r in records)


def row(record: ProgressRecord) -> List[str]:
    return [str(record.step), str(record.view), str(record.pass_index), str(record.noise_level), f"{record.psnr:.4f}",
            f"{record.lpips:.5f}"]  # fmt: skip


def read_progress_csv(path: Path) -> List[ProgressRecord]:
    """The records of an edit_progress.csv."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return [
            ProgressRecord(
                int(r["step"]),
                int(r["view"]),
                int(r["pass_index"]),
                int(r["noise_level"]),
                float(r["psnr"]),
                float(r["lpips"]),
            )  # fmt: skip
            for r in reader
        ]
