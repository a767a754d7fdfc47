"""Measurements in processes of their own, so that each one's peak memory is its own.

A measurement is a worker function of this package run in a fresh Python (`python -m bench.workers SPEC`) from a JSON
spec; its results come back as JSON beside the spec. Every measured command runs under a small launcher that records
the peak RSS of the command and its children.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

from bench.reference_render import render_reference_worker
from bench.scaling import devices_worker
from bench.training import train_interval_worker, train_worker

ROOT = Path(__file__).resolve().parents[1]
"""The repository root, which holds this package (it is not installed with in2n)."""
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command and writes its peak RSS (kB). Linux starts a process's peak-RSS record at the memory of the process
that spawned it, so the harness (gigabytes, with the diffusion model loaded) spawns this small launcher, which spawns
the measured command."""


def nerfstudio_command(name: str) -> List[str]:
    """An ns-* command (train, render) run by this Python: it needs nerfstudio importable, not its console scripts."""
    return [sys.executable, "-c", f"from nerfstudio.scripts.{name} import entrypoint; entrypoint()"]


def run_measured(command: Sequence[Any], log: Path, env: Dict[str, str]) -> Dict[str, float]:
    """Run a command to completion; its wall time and the peak resident memory of it and its children."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak_file = log.with_suffix(".peak_rss_kb")
    start = time.perf_counter()
    with open(log, "w") as output:
        launch = [sys.executable, "-I", "-S", "-c", LAUNCHER, peak_file, *map(str, command)]
        result = subprocess.run(launch, stdout=output, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{Path(str(command[0])).name} exited {result.returncode}; log {log}:\n{tail}")
    return {"wall_s": wall, "peak_rss_mb": int(peak_file.read_text()) / 1024}


def run_worker_process(kind: str, spec: Dict[str, Any], work: Path, name: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Run the worker `kind` on `spec` in its own process; its results, wall time and peak RSS."""
    spec_path, result_path = work / "logs" / f"{name}.spec.json", work / "logs" / f"{name}.result.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps({"kind": kind, "result": str(result_path), **spec}))
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    usage = run_measured(
        [sys.executable, "-m", "bench.workers", spec_path], work / "logs" / f"{name}.log", {**env, "PYTHONPATH": path}
    )
    result = json.loads(result_path.read_text())
    # A worker that measured memory per phase reset its peak-RSS record (bench.memory), so the launcher's peak covers
    # only the time since its last reset; the worker's own record covers all of it.
    peak = max(usage["peak_rss_mb"], result.get("peak_rss_mb", 0.0))
    return {**result, **usage, "peak_rss_mb": peak}


WORKERS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "train": train_worker,
    "train-interval": train_interval_worker,
    "render-reference": render_reference_worker,
    "devices": devices_worker,
}


def run_worker(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    Path(spec["result"]).write_text(json.dumps(WORKERS[spec["kind"]](spec)))


if __name__ == "__main__":
    run_worker(Path(sys.argv[1]))
