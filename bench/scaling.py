"""The edit on several devices: one in2n run per device count, launched as ns-train launches it
(`--machine.num-devices N`: nerfstudio's launch, one process per device), timed over whole edit intervals.

Every process times the same steps; rank 0 reports. Each step ends in the processes' exchanges (DDP's gradient
average, the gathered edits), so rank 0's clock covers the slowest process.
"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List

import torch.distributed as dist

from bench.devices import warm_up
from bench.memory import PhaseMemory
from bench.profiling import clock, median
from bench.training import EDITED_RUN_STEPS, peak_fields, trainer_config, training_setup, training_step
from in2n.distributed import device_problems
from in2n.trainer import In2nTrainerConfig

NUM_DEVICES_FLAG = "--machine.num-devices"


def edit_count_for(default: int, device_counts: List[int]) -> int:
    """Views per edit for a comparison across `device_counts`: the variant's own, raised to the next multiple of the
    largest count, so that each device of the largest run has a whole share of every edit (fewer views than devices
    leave some of them waiting)."""
    largest = max(device_counts)
    return -(-max(default, largest) // largest) * largest


def run_config(spec: Dict[str, Any]) -> In2nTrainerConfig:
    """The trainer config of the run of `spec`, on spec["devices"] devices."""
    args = [*spec["args"], NUM_DEVICES_FLAG, str(spec["devices"])]
    return trainer_config(spec["variant"], args, training_setup(spec["device"]))


def launch_problems_on(spec: Dict[str, Any]) -> List[str]:
    """What keeps the run of `spec` from running on spec["devices"] devices (rays that do not split into whole
    patches, a device count the options cannot share out), each with what to change; none: it can run."""
    return device_problems(run_config(spec).pipeline, spec["devices"])


def devices_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Set up the in2n run of `spec` on spec["devices"] devices as ns-train does, launch it with nerfstudio's launch,
    and return what rank 0 measured (`timed_run`)."""
    from nerfstudio.scripts.train import launch

    Path(spec["rank_0_result"]).unlink(missing_ok=True)  # what a run before this one left
    config = run_config(spec)
    # As in ns-train: saving the config prepares a launch on several devices (in2n.distributed.prepare_launch).
    config.save_config()
    launch(
        main_func=functools.partial(timed_run, spec),
        num_devices_per_machine=spec["devices"],
        device_type=config.machine.device_type,
        config=config,
    )
    return json.loads(Path(spec["rank_0_result"]).read_text())


def barrier(world_size: int) -> None:
    """Wait for every process of the run (one process has none to wait for, nor a process group)."""
    if world_size > 1:
        dist.barrier()


def timed_run(spec: Dict[str, Any], local_rank: int, world_size: int, config: Any, global_rank: int = 0) -> None:
    """One process of the run (nerfstudio's `train_loop`, with the steps timed instead of `trainer.train()`): an
    untimed edit interval (one-off costs), then spec["intervals"] timed ones; rank 0 writes the results."""
    from nerfstudio.scripts.train import _set_random_seed

    memory = PhaseMemory.for_device(f"cuda:{local_rank}" if spec["device"] == "cuda" else "cpu")
    _set_random_seed(config.machine.seed + global_rank)
    trainer = config.setup(local_rank=local_rank, world_size=world_size)
    trainer.setup()
    device = str(trainer.pipeline.device)
    warm_up(device, spec["warm_up_s"])
    loop = trainer.edit_loop
    rate = loop.config.edit_rate
    # Steps numbered as in an edit of a 30000-step nerfacto run (bench.training). Any edit_rate consecutive steps hold
    # one step with an edit: the first interval pays the one-off costs, untimed.
    first = EDITED_RUN_STEPS
    for number in range(first, first + rate):
        training_step(trainer, number)

    plain: List[float] = []
    edit_steps: List[float] = []
    barrier(world_size)  # all processes start the timed steps together
    edited_before = loop.schedule.views_edited
    start = clock(device)
    for number in range(first + rate, first + rate * (1 + spec["intervals"])):
        edited = loop.schedule.views_edited
        step_start = clock(device)
        training_step(trainer, number)
        (edit_steps if loop.schedule.views_edited > edited else plain).append(clock(device) - step_start)
    barrier(world_size)
    seconds = clock(device) - start
    views = loop.schedule.views_edited - edited_before
    if global_rank != 0:
        return
    step_s = statistics.mean(plain)
    edit_step_s = median(edit_steps)
    assert edit_step_s is not None, "every timed interval has an edit step"
    per_edit = views // len(edit_steps)
    timed_steps = len(plain) + len(edit_steps)
    result = {
        "devices": world_size,
        "steps_per_s": timed_steps / seconds,
        "views_per_s": views / seconds,
        "step_s": step_s,
        "edit_step_s": edit_step_s,
        "edit_view_s": max(0.0, edit_step_s - step_s) / per_edit,
        "timed_steps": timed_steps,
        "views_edited": views,
        "views_per_edit_step": per_edit,
        "edit_rate": rate,
        **peak_fields(memory.overall_mb()),
    }
    Path(spec["rank_0_result"]).write_text(json.dumps(result))
