"""An edit on several devices: nerfstudio's data-parallel training (`--machine.num-devices N`, one process per device),
with every training step and every edit shared out among the processes.

How a run on N devices relates to the same run on one device:

- Training: every process samples the step's whole batch of rays (the same rays: the samplers are seeded from the
  step) and trains on its 1/N of them, in whole LPIPS patches; DDP averages the gradients. The step is the one-device
  step split into N parts, so its gradients are the one-device gradients up to float rounding, and
  `--pipeline.datamanager.train-num-rays-per-batch` stays the rays of a whole step (nerfstudio's own methods give each
  device that many). What differs: nerfacto's random jitter of the samples along each ray is drawn per process.
- Edits: the views due at a step (the same schedule, seeds and noise levels as on one device) are shared out, each
  process renders and edits its share, and every process writes every edit into its training images, in the order
  one process would, so all of them train on the same images and keep the same schedule and progress records.
- The process of rank 0 serves the viewer and writes the checkpoints and edit_progress.csv; the viewer's settings and
  Reset reach every process at the start of the next step (`Ranks.agree`).
- The launch is nerfstudio's (`nerfstudio.scripts.train.launch`, torch.multiprocessing): `prepare_launch`, called in
  ns-train's process just before it, makes it run on the CPU as well (gloo) and reports a process that fails as one
  message (`report_failures`).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from in2n.dataset_update.background import EditRequest
from in2n.dataset_update.loop import EditResult
from in2n.errors import In2nError, format_error
from in2n.ray_chunks import StepOutputs, accumulate, automatic_chunks, chunk_slices
from in2n.validation import raise_problems

CONTROL_TIMEOUT = timedelta(days=7)
"""How long a process waits for the others at the start of a step. Rank 0 may hold the others there for as long as
the viewer's Pause Training button is down, or while it saves a checkpoint or renders an eval image; a process that
dies is noticed at once all the same (its connections close, and torch's launcher stops the others)."""
FAILURES_VARIABLE = "IN2N_PROCESS_FAILURES"
"""Names the folder where a process of a run on several devices leaves the message of the In2nError that stopped it,
for ns-train's process to show."""


# ----------------------------------------------------------------------------------------------------------------
# The options.


def world_size_of(config: Any) -> int:
    """The processes a trainer config's run uses (`--machine.num-devices` x `--machine.num-machines`)."""
    return int(config.machine.num_devices) * int(config.machine.num_machines)


def device_problems(pipeline: Any, world_size: int) -> List[str]:
    """What the pipeline options cannot do on `world_size` devices, each with what to change."""
    if world_size <= 1:
        return []
    devices = f"--machine.num-devices {world_size}"
    problems = []
    one_device = pipeline.several_devices_problem() if hasattr(pipeline, "several_devices_problem") else None
    if one_device is not None:
        return [f"{devices}: {one_device}"]
    datamanager = pipeline.datamanager
    patch = getattr(datamanager, "patch_size", 1)
    rays = getattr(datamanager, "train_num_rays_per_batch", 0)
    patches = rays // (patch * patch)
    if patches % world_size:
        unit = f"whole {patch}x{patch} patches (LPIPS)" if patch > 1 else "rays"
        problems.append(
            f"{devices} shares each step's rays out among the devices in {unit}, and "
            f"--pipeline.datamanager.train-num-rays-per-batch {rays} gives {patches}, which do not split into "
            f"{world_size} equal shares. Use a multiple of {world_size * patch * patch} rays."
        )
    chunks = pipeline.ray_chunks
    if chunks is not None and chunks > world_size and chunks % world_size:
        problems.append(
            f"{devices} shares a step's micro-batches out among the devices: --pipeline.ray-chunks {chunks} does not "
            f"split evenly; use a multiple of {world_size}, or leave it out (parts of at most 4096 rays)."
        )
    if pipeline.concurrent_edits == "on":
        problems.append(
            f"--pipeline.concurrent-edits on: with {devices} each device edits its share of the views between "
            "training steps; edits beside training run on one device only. Use --pipeline.concurrent-edits auto or off."
        )
    if getattr(pipeline, "ip2p_device", None) is not None:
        problems.append(
            f"--pipeline.ip2p-device {pipeline.ip2p_device}: with {devices} each process edits on the device it "
            "trains on. Leave --pipeline.ip2p-device out."
        )
    return problems


def launch_problems(config: Any) -> List[str]:
    """What keeps a trainer config from running on its devices here, each with what to change."""
    world_size = world_size_of(config)
    problems = device_problems(config.pipeline, world_size)
    device_type = config.machine.device_type
    devices = config.machine.num_devices
    if device_type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if devices > available:
            problems.append(
                f"--machine.num-devices {devices}: this machine has {available} CUDA device(s). Use at most "
                f"{available}, or --machine.device-type cpu to train in {devices} processes on the CPU."
            )
    elif device_type != "cpu":
        problems.append(
            f"--machine.num-devices {devices} with --machine.device-type {device_type}: several devices are "
            "supported on cuda (NCCL) and cpu (gloo)."
        )
    return problems


# ----------------------------------------------------------------------------------------------------------------
# The launch, in ns-train's process.


def prepare_launch(config: Any) -> None:
    """Set up ns-train's process for nerfstudio's launch of `config` on several devices: check the options, run each
    process through `distributed_worker`, and show a failed process as one message.

    Called by in2n's trainer config when ns-train saves it, just before it launches the processes.
    """
    from nerfstudio.scripts import train

    from in2n.process import prepare_process

    prepare_process()
    raise_problems(launch_problems(config))
    # nerfstudio's worker asserts that CUDA is available, and spawn's children find the worker by its module and name.
    train._distributed_worker = distributed_worker  # type: ignore[attr-defined]
    failures = Path(tempfile.mkdtemp(prefix="in2n-processes-"))
    # Removed after the excepthook has shown a failure (Python runs atexit functions after it).
    atexit.register(shutil.rmtree, failures, ignore_errors=True)
    os.environ[FAILURES_VARIABLE] = str(failures)  # inherited by the processes the launch spawns
    # torch's launcher logs a warning for every process it stops after another failed; the failure says it all.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    report_failures(world_size_of(config), Path(config.get_checkpoint_dir()), failures)


def distributed_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_devices_per_machine: int,
    machine_rank: int,
    dist_url: str,
    config: Any,
    timeout: timedelta = timedelta(minutes=30),
    device_type: str = "cuda",
) -> Any:
    """nerfstudio's `_distributed_worker` (the same arguments), for CUDA (NCCL) and the CPU (gloo) alike.

    Besides what nerfstudio's does, each process trains on its own CUDA device (or its share of the CPU's cores),
    prints only on rank 0, and leaves the message of an In2nError that stops it for ns-train's process to show.
    """
    from nerfstudio.utils import comms
    from nerfstudio.utils.rich_utils import CONSOLE

    global_rank = machine_rank * num_devices_per_machine + local_rank
    if global_rank != 0:
        CONSOLE.quiet = True  # rank 0 says what every process would
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    else:
        torch.set_num_threads(max(1, torch.get_num_threads() // num_devices_per_machine))
    try:
        dist.init_process_group(
            backend="nccl" if device_type == "cuda" else "gloo",
            init_method=dist_url,
            world_size=world_size,
            rank=global_rank,
            timeout=timeout,
        )
        size = num_devices_per_machine
        for machine in range(world_size // size):
            group = dist.new_group(list(range(machine * size, (machine + 1) * size)))
            if machine == machine_rank:
                comms.LOCAL_PROCESS_GROUP = group
        output = main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
    except In2nError as error:
        leave_failure(local_rank, error)
        raise
    dist.destroy_process_group()
    return output


def leave_failure(local_rank: int, error: In2nError) -> None:
    folder = os.environ.get(FAILURES_VARIABLE)
    if folder:
        (Path(folder) / f"process-{local_rank}.txt").write_text(str(error), "utf8")


def report_failures(world_size: int, checkpoint_dir: Path, failures: Path) -> None:
    """Show a process of the run that failed, or was killed, as one message: its own for an In2nError, and otherwise
    what happened, with its traceback; then what is on disk and how to continue. (The launcher stops the other
    processes before it raises.)"""
    previous = sys.excepthook

    def hook(kind: Type[BaseException], value: BaseException, traceback: Optional[TracebackType]) -> None:
        message = failure_message(value, world_size, checkpoint_dir, failures)
        if message is None:
            previous(kind, value, traceback)
        else:
            print(message, file=sys.stderr)

    hook._in2n = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def failure_message(error: BaseException, world_size: int, checkpoint_dir: Path, failures: Path) -> Optional[str]:
    """The message for ns-train's process when one of the run's processes failed (None for any other error)."""
    from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

    if not isinstance(error, (ProcessRaisedException, ProcessExitedException)):
        return None
    index = error.error_index
    left = failures / f"process-{index}.txt"
    if isinstance(error, ProcessRaisedException) and left.is_file():
        return format_error(In2nError(left.read_text("utf8")))
    process = f"process {index} of the {world_size} (rank {index})"
    if isinstance(error, ProcessRaisedException):
        trace = str(error).split("terminated with the following error:\n", 1)[-1].rstrip()
        what = f"{process} failed; the other processes were stopped with it. Its error:\n\n{trace}\n"
    elif error.exit_code < 0:
        name = signal.Signals(-error.exit_code).name if -error.exit_code in signal.valid_signals() else "a signal"
        what = (
            f"{process} was killed by {name} (out of memory, or stopped from outside); the other processes were "
            "stopped with it."
        )
    else:
        what = f"{process} exited with status {error.exit_code}; the other processes were stopped with it."
    return format_error(In2nError(f"{what}\n{on_disk(checkpoint_dir)}"))


def on_disk(checkpoint_dir: Path) -> str:
    """What a stopped run leaves, and how to continue it."""
    from in2n.runs.checkpoints import checkpoints_in

    found = checkpoints_in(checkpoint_dir) if checkpoint_dir.is_dir() else {}
    if not found:
        return "It had saved no checkpoint yet: run the command again to start over."
    newest = max(found)
    return (
        f"Nothing is half-written: the newest checkpoint, {found[newest]} (step {newest}), is complete. To continue "
        f"the edit, run the same command with --load-dir {checkpoint_dir}, on any number of devices."
    )


# ----------------------------------------------------------------------------------------------------------------
# The processes of a run, in each of them.


class SharedControls:
    """What the viewer's controls ask for, on the process that serves the viewer (rank 0); `Ranks.agree` hands it to
    every process's edit loop at the start of a step, so that all of them apply a change at the same step.

    The viewer panel writes here instead of into the loop's live settings, which the running step reads.
    """

    def __init__(self, live: Any) -> None:
        self.live = copy.copy(live)
        self._reset = threading.Event()

    def request_reset(self) -> None:
        self._reset.set()

    def take(self) -> Tuple[Any, bool]:
        """The settings as they are now, and whether Reset was asked for since the last call."""
        reset = self._reset.is_set()
        if reset:
            self._reset.clear()
        return copy.copy(self.live), reset


class Ranks:
    """The processes of a training run on several devices, seen from one of them.

    Built by `join` in every process's pipeline; the pipeline asks it for the step's rays and its share of the step,
    and the edit loop for its share of the edits and the settings of the step (the loop's `EditShare`).

    Args:
        rank: this process's rank (0 serves the viewer and writes the checkpoints).
        world_size: the number of processes.
        group: a gloo group of all of them, for what in2n exchanges on the CPU (edits, settings).
        model: the DDP-wrapped model the training steps run through (None: only edits are shared).
        seed: the seed the step's rays are sampled from, the same in every process.
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        group: Any,
        model: Optional[DistributedDataParallel] = None,
        seed: int = 0,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.group = group
        self.model = model
        self.seed = seed
        self.controls: Optional[SharedControls] = None

    @classmethod
    def join(cls, pipeline: Any, world_size: int, panel: Optional[nn.Module] = None) -> Ranks:
        """Make `pipeline` (an in2n pipeline, set up for one process) one of `world_size` processes: its model in
        DDP, its edit loop sharing its edits, and the viewer panel's controls shared."""
        raise_problems(device_problems(pipeline.config, world_size))
        group = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
        # nerfstudio's VanillaPipeline trains through `_model` (DDP when several processes train) and uses `model`,
        # the module inside, for everything else; its own wrapping supports CUDA devices only.
        pipeline._model = data_parallel(pipeline._model, pipeline.device)
        pipeline.world_size = world_size
        # Rank 0's seed (nerfstudio seeds each process with --machine.seed plus its rank).
        seed = broadcast(torch.initial_seed(), group)
        ranks = cls(dist.get_rank(), world_size, group, pipeline._model, seed)
        loop = pipeline.edit_loop
        if loop is not None:
            loop.share = ranks
            if panel is not None and hasattr(panel, "controls"):
                ranks.controls = panel.controls = SharedControls(loop.live)
            if loop.config.edit_count % world_size:
                from in2n.console import notice

                notice(
                    f"--pipeline.edit-count {loop.config.edit_count} on {world_size} devices: an edit's views are "
                    f"shared out among the devices, so some of them wait while the others edit. --pipeline.edit-count "
                    f"{world_size * max(1, round(loop.config.edit_count / world_size))} keeps every device busy."
                )
        return ranks

    # ------------------------------------------------------------------------------------------------------------
    # Training steps.

    def next_train(self, datamanager: Any, step: int) -> Tuple[Any, Dict[str, Any]]:
        """The step's rays and batch, the same in every process; then the random draws of this process's part of the
        step (the samples' jitter along the rays) from a generator of its own."""
        torch.manual_seed(step_seed(self.seed, step))
        ray_bundle, batch = datamanager.next_train(step)
        torch.manual_seed(step_seed(self.seed, step, self.rank))
        return ray_bundle, batch

    def parts(self, num_rays: int, patch_rays: int, ray_chunks: Optional[int]) -> List[slice]:
        """This process's micro-batches of a step of `num_rays` rays: its 1/N of the step, in whole patches, in parts
        of at most 4096 rays (or `ray_chunks` / N parts)."""
        share = num_rays // self.world_size
        if ray_chunks is None:
            per_process = automatic_chunks(share, patch_rays)
        else:
            per_process = max(1, ray_chunks // self.world_size)
        slices = chunk_slices(num_rays, per_process * self.world_size, patch_rays)
        return slices[self.rank * per_process : (self.rank + 1) * per_process]

    def accumulate(
        self,
        num_rays: int,
        patch_rays: int,
        ray_chunks: Optional[int],
        step_part: Callable[[slice], StepOutputs],
        backward: Callable[[Tensor], None],
    ) -> StepOutputs:
        """`ray_chunks.accumulate` over this process's parts; DDP averages the gradients with the last part's backward
        (the trainer's), so the gradients equal the whole step's on one device. The losses returned are this
        process's share's."""
        parts = self.parts(num_rays, patch_rays, ray_chunks)
        model = self.model
        assert model is not None, "only a training pipeline trains"

        def part_of_step(part: slice) -> StepOutputs:
            with nullcontext() if part is parts[-1] else model.no_sync():
                return step_part(part)

        def local_backward(loss: Tensor) -> None:
            with model.no_sync():
                backward(loss)

        return accumulate(parts, part_of_step, local_backward)

    # ------------------------------------------------------------------------------------------------------------
    # Edits (the edit loop's EditShare).

    def agree(self, loop: Any) -> None:
        """Give every process's loop the live settings and Reset request of rank 0 (where the viewer is), before the
        step's edits."""
        state = self.controls.take() if self.rank == 0 and self.controls is not None else None
        live, reset = broadcast(state, self.group) or (None, False)
        if live is not None:
            for field in dataclasses.fields(live):
                setattr(loop.live, field.name, getattr(live, field.name))
        if reset:
            loop.request_reset()

    def mine(self, groups: List[List[int]]) -> List[List[int]]:
        """This process's share of the views due, in batches of one size: each batch's views, in equal consecutive
        parts (the first processes take one more when they do not split evenly)."""
        shares = []
        for views in groups:
            base, extra = divmod(len(views), self.world_size)
            start = self.rank * base + min(self.rank, extra)
            share = views[start : start + base + (self.rank < extra)]
            if share:
                shares.append(share)
        return shares

    def gather(self, results: List[EditResult], groups: List[List[int]]) -> List[EditResult]:
        """Every process's edits of the step, in `groups`, the batches one process would have edited: what each
        process writes, in the same order, so that their training images, schedules and records stay the same."""
        mine = [view_edit for request, edited in results for view_edit in split_edit(request, edited.cpu())]
        everyone: List[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine, group=self.group)
        by_view = {request.views[0]: (request, edited) for share in everyone for request, edited in share}
        return [merge_edits([by_view[view] for view in views]) for views in groups]


def data_parallel(model: nn.Module, device: Any) -> DistributedDataParallel:
    """The model in DDP on its device: a CUDA device of its own, or the CPU (`device_ids` None)."""
    device = torch.device(device)
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    # nerfacto's proposal networks train on some steps only, so a step may leave some parameters without gradients.
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def broadcast(value: Any, group: Any, source: int = 0) -> Any:
    """`value` of rank `source`, in every process of `group`."""
    holder = [value]
    dist.broadcast_object_list(holder, src=source, group=group)
    return holder[0]


def step_seed(seed: int, step: int, *more: int) -> int:
    """A seed for step `step` of a run seeded `seed` (and for `more`, e.g. a rank), independent of every other."""
    text = ":".join(str(part) for part in ("rays", seed, step, *more))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & ((1 << 63) - 1)


def split_edit(request: EditRequest, edited: Tensor) -> List[EditResult]:
    """An edit of several views as one edit per view."""
    return [
        (
            EditRequest(
                step=request.step,
                views=[view],
                renders=request.renders[i : i + 1],
                originals=request.originals[i : i + 1],
                prompt=request.prompt,
                settings=request.settings,
                seeds=[request.seeds[i]],
                passes=[request.passes[i]],
                masks=None if request.masks is None else request.masks[i : i + 1],
                noise_levels=None if request.noise_levels is None else [request.noise_levels[i]],
            ),
            edited[i : i + 1],
        )
        for i, view in enumerate(request.views)
    ]


def merge_edits(edits: Sequence[EditResult]) -> EditResult:
    """Edits of one view each (of one step, one size) as one edit of all their views, in their order."""
    requests = [request for request, _ in edits]
    first = requests[0]

    def joined(name: str) -> Any:
        values = [getattr(request, name) for request in requests]
        return None if values[0] is None else torch.cat(values)

    def listed(name: str) -> Any:
        values = [getattr(request, name) for request in requests]
        return None if values[0] is None else [value for listed in values for value in listed]

    request = EditRequest(
        step=first.step,
        views=listed("views"),
        renders=joined("renders"),
        originals=joined("originals"),
        prompt=first.prompt,
        settings=first.settings,
        seeds=listed("seeds"),
        passes=listed("passes"),
        masks=joined("masks"),
        noise_levels=listed("noise_levels"),
    )
    return request, torch.cat([edited for _, edited in edits])


def single_device_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """A pipeline's state dict as one process writes it: the model's entries without the "module." DDP adds, so that
    a checkpoint reads the same whatever the number of devices that wrote it (nerfstudio's loaders take both)."""
    prefix = "_model.module."
    return {("_model." + key[len(prefix) :] if key.startswith(prefix) else key): value for key, value in state.items()}
