"""A benchmark run: the model and the offline environment it needs, every measurement, and the results files."""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

from bench.config import BenchConfig, Plan, make_plan
from bench.devices import cuda_device_count, resolve_device
from bench.edits import expected_scaled_fraction, measure_edits
from bench.machine import machine
from bench.memory import process_tracker
from bench.progress import log
from bench.report import markdown
from bench.runs import measure_runs
from bench.training import training_setup
from in2n.synthetic.ip2p import save_random_ip2p
from in2n.synthetic.lpips_backbone import write_random_alexnet


@contextmanager
def offline_environment(work: Path) -> Iterator[Dict[str, str]]:
    """Environment with a random LPIPS backbone (nerfacto loads it at construction) and no hub access."""
    torch_home = work / "torch_home"
    write_random_alexnet(torch_home)
    values = {"TORCH_HOME": str(torch_home), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield os.environ.copy()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def as_json(value: Any) -> Any:
    """Plain JSON values (paths and other objects as their text)."""
    return json.loads(json.dumps(value, default=str))


def run(config: BenchConfig, plan: Optional[Plan] = None) -> Dict[str, Any]:
    """Run every measurement of `plan` (default: the plan of `config` on its device); writes and returns the
    results. The results files are rewritten after every measurement, so a run stopped part-way (a time limit, a
    failed training process) leaves what it measured up to then."""
    plan = plan or make_plan(config, resolve_device(config.device), cuda_device_count())
    started = time.perf_counter()
    work = config.output_dir
    work.mkdir(parents=True, exist_ok=True)
    model = work / "models" / config.model_size
    results: Dict[str, Any] = {
        "machine": machine(plan.device),
        "config": as_json(asdict(config)),
        "plan": as_json(asdict(plan)),
        "training_setup": training_setup(plan.device).description,
    }

    def save() -> None:
        results["wall_s"] = time.perf_counter() - started
        # The per-phase measurements reset the kernel's peak-RSS record; the process's tracker has the whole run's.
        tracked = process_tracker(plan.device).overall_mb().get("rss", 0.0)
        results["peak_rss_mb_harness"] = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, tracked)
        write_atomically(work / "bench.json", json.dumps(as_json(results), indent=2))
        write_atomically(work / "bench.md", markdown(results))

    with offline_environment(work) as env:
        log(f"building InstructPix2Pix ({config.model_size}, random weights) in {model}")
        start = time.perf_counter()
        save_random_ip2p(model, size=config.model_size, seed=config.seed)
        results["model_save_s"] = time.perf_counter() - start
        try:
            if plan.sizes:
                results["edit"] = measure_edits(config, plan, model, work)
                results["expected_scaled_unet_fraction"] = expected_scaled_fraction(config.steps)
                save()
            if not config.skip_training:
                measure_runs(config, plan, work, model, env, results, save)
        finally:
            if not config.keep_model:
                shutil.rmtree(model, ignore_errors=True)
    save()
    log(f"done in {results['wall_s'] / 60:.1f} min: {work / 'bench.md'}")
    return results


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`, never leaving a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)
