"""Peak memory per phase of a process: a training step, the render of the view to edit, the edit, ...

On the CPU the counter is the resident set size: Linux keeps its high-water mark (VmHWM in /proc/self/status) and
resets it to the current RSS when "5" is written to /proc/self/clear_refs. On CUDA the counters are those of torch's
caching allocator: memory held by tensors (`max_memory_allocated`) and memory reserved from the driver
(`max_memory_reserved`), whose peaks `reset_peak_memory_stats` resets. Each phase reports, per counter, its peak and
its peak above the value it started at (what the phase itself added). Phases may nest: a peak inside an inner phase
counts for the outer ones too, and for the peak of the whole process, which the phases' resets would otherwise hide.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

MB = 1024**2


class MemoryCounters(ABC):
    """Memory counters whose peaks are read and reset together."""

    names: Tuple[str, ...]

    @abstractmethod
    def current_mb(self) -> Dict[str, float]:
        """Each counter's value now."""

    @abstractmethod
    def peaks_mb(self) -> Dict[str, float]:
        """Each counter's peak since the last reset."""

    @abstractmethod
    def reset_peaks(self) -> None:
        """Start the peaks anew from the current values."""


class ResidentSetSize(MemoryCounters):
    """The process's resident set size ("rss"), from /proc (Linux)."""

    names = ("rss",)

    def __init__(self, proc: Path = Path("/proc/self")) -> None:
        self.status = proc / "status"
        self.clear_refs = proc / "clear_refs"

    def available(self) -> bool:
        """Whether this kernel offers the counters and lets the peak be reset."""
        return self.status.exists() and os.access(self.clear_refs, os.W_OK)

    def _read_kb(self, key: str) -> float:
        line = next(line for line in self.status.read_text().splitlines() if line.startswith(f"{key}:"))
        return float(line.split()[1])

    def current_mb(self) -> Dict[str, float]:
        return {"rss": self._read_kb("VmRSS") / 1024}

    def peaks_mb(self) -> Dict[str, float]:
        return {"rss": self._read_kb("VmHWM") / 1024}

    def reset_peaks(self) -> None:
        self.clear_refs.write_text("5")


class CudaAllocator(MemoryCounters):
    """torch's caching allocator on one CUDA device: "allocated" (held by tensors) and "reserved" (from the driver)."""

    names = ("allocated", "reserved")

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def current_mb(self) -> Dict[str, float]:
        return {
            "allocated": torch.cuda.memory_allocated(self.device) / MB,
            "reserved": torch.cuda.memory_reserved(self.device) / MB,
        }

    def peaks_mb(self) -> Dict[str, float]:
        return {
            "allocated": torch.cuda.max_memory_allocated(self.device) / MB,
            "reserved": torch.cuda.max_memory_reserved(self.device) / MB,
        }

    def reset_peaks(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)


class PeakTracker:
    """The peaks of a process's memory counters, folded into every phase open at the time and into the process's
    own peak.

    Every phase start and end reads the peaks since the last reading, folds them into the phases still open (and the
    process's), then resets them; so a phase's peak is the highest value between its start and end whatever nests
    inside. The counters are process-wide (the kernel's high-water mark, CUDA's peak statistics), so there is one
    tracker per process: a reset made for one measurement must not hide a peak from another.
    """

    def __init__(self, counters: List[MemoryCounters]) -> None:
        self.counters = counters
        self._open: List[Dict[str, float]] = []  # the running peaks of the open phases, innermost last
        self._overall: Dict[str, float] = {}
        # Before the first reset the peaks cover the process since it started.
        self.fold()

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(name for counters in self.counters for name in counters.names)

    def add(self, counters: MemoryCounters) -> None:
        self.counters.append(counters)
        self.fold()

    def current(self) -> Dict[str, float]:
        return {name: value for counters in self.counters for name, value in counters.current_mb().items()}

    def fold(self) -> None:
        # All peaks are read before any is reset: CUDA's reset clears "allocated" and "reserved" together.
        peaks = {name: value for counters in self.counters for name, value in counters.peaks_mb().items()}
        for counters in self.counters:
            counters.reset_peaks()
        for running in [*self._open, self._overall]:
            for name, value in peaks.items():
                running[name] = max(running.get(name, value), value)

    @contextmanager
    def tracking(self) -> Iterator[Tuple[Dict[str, float], Dict[str, float]]]:
        """(the counters' values at the start, their running peaks) of the block, the peaks complete at its end."""
        self.fold()
        start = self.current()
        running = dict(start)
        self._open.append(running)
        try:
            yield start, running
        finally:
            self.fold()
            assert self._open.pop() is running, "phases nest"

    def overall_mb(self) -> Dict[str, float]:
        """Each counter's peak over the whole process so far."""
        self.fold()
        return dict(self._overall)


_process_tracker: Optional[PeakTracker] = None


def process_tracker(device: str) -> PeakTracker:
    """The process's tracker, with the counters a process computing on `device` needs: its RSS where Linux offers
    it, and CUDA's allocator."""
    global _process_tracker
    if _process_tracker is None:
        rss = ResidentSetSize()
        _process_tracker = PeakTracker([rss] if rss.available() else [])
    target = torch.device(device)
    counted = any(isinstance(c, CudaAllocator) and c.device == target for c in _process_tracker.counters)
    if target.type == "cuda" and not counted:
        _process_tracker.add(CudaAllocator(target))
    return _process_tracker


@dataclass
class PhasePeak:
    """One counter during one phase, in MB: the largest over the phase's calls."""

    peak_mb: float
    """The counter's highest value."""
    above_start_mb: float
    """The highest value less the value the call started at: what the phase itself added."""


class PhaseMemory:
    """Peak memory per named phase of one measurement."""

    def __init__(self, tracker: PeakTracker) -> None:
        self.tracker = tracker
        self.phases: Dict[str, Dict[str, PhasePeak]] = {}

    @classmethod
    def for_device(cls, device: str) -> PhaseMemory:
        return cls(process_tracker(device))

    @property
    def counter_names(self) -> Tuple[str, ...]:
        return self.tracker.names

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Measure the block as one call of phase `name`."""
        with self.tracker.tracking() as (start, running):
            yield
        recorded = self.phases.setdefault(name, {})
        for counter, peak in running.items():
            above = max(0.0, peak - start[counter])
            if counter in recorded:
                peak, above = max(peak, recorded[counter].peak_mb), max(above, recorded[counter].above_start_mb)
            recorded[counter] = PhasePeak(peak_mb=peak, above_start_mb=above)

    def overall_mb(self) -> Dict[str, float]:
        """Each counter's peak over the whole process so far."""
        return self.tracker.overall_mb()

    def report(self) -> Dict[str, Dict[str, Dict[str, float]]]:
        """{phase: {counter: {"peak_mb", "above_start_mb"}}}, for the results file."""
        return {phase: {name: asdict(peak) for name, peak in peaks.items()} for phase, peaks in self.phases.items()}
