"""The benchmark's options, and the plan they make on a device: what is measured, at which sizes, how often."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Tuple

from in2n.editors.families import SD_INSTRUCT_PIX2PIX, SDXL_INSTRUCT_PIX2PIX
from in2n.synthetic.ip2p import IP2P_SHAPES, IP2PSize

Variant = Literal["in2n-big", "in2n", "in2n-lite", "in2n-splat", "in2n-splat-lite"]
NERF_VARIANTS: Tuple[Variant, ...] = ("in2n-big", "in2n", "in2n-lite")
SPLAT_VARIANTS: Tuple[Variant, ...] = ("in2n-splat", "in2n-splat-lite")
Mode = Literal["ours", "reference", "compiled"]
Precision = Literal["fp16", "fp32"]
DeviceName = Literal["cpu", "cuda"]
MODES: Tuple[Mode, ...] = ("ours", "reference")


class BenchError(Exception):
    """Options this machine cannot measure; the message says why in one line."""


@dataclass
class BenchConfig:
    """Measure in2n ("ours") against the original implementation's behaviour ("reference") on this machine."""

    device: Optional[DeviceName] = None
    """Where everything runs: cpu or cuda; default: cuda when a CUDA device is available, else cpu."""
    quick: bool = False
    """A shorter run: medians of 3 edits, a 3 s GPU warm-up, training measured the package's way only (the
    reference's training step differs only by its editor), 2 edit intervals per concurrency mode, no ns-render
    measurement and no time to converged. Without the splat variants it took under 5 minutes on one H200."""
    sizes: Optional[Tuple[int, ...]] = None
    """Square view sizes (px) the edit is timed at; default: the model's edit size (512 px; 768 for SDXL) on CUDA,
    half of it and it on the CPU. `--sizes` with no value skips the edit measurements."""
    views: Optional[Tuple[int, ...]] = None
    """Views per edit (the pipeline's --pipeline.edit-count), each measured on its own: ours edits them in one batched
    call, the reference one at a time; default: 1 2 4 on CUDA, 2 on the CPU."""
    precisions: Optional[Tuple[Precision, ...]] = None
    """InstructPix2Pix precisions the edits are timed in; default: fp16 fp32 on CUDA, fp32 on the CPU (the only one
    the editor runs there)."""
    steps: int = 20
    """DDIM steps of the edits reported (the original's default)."""
    timed_passes: Optional[int] = None
    """UNet passes actually run per edit; below --steps, the remaining passes are added at the measured time per pass
    (a pass costs the same at every noise level) and the numbers are marked as derived. Default: all --steps on CUDA,
    2 on the CPU (an SD-1.5 UNet pass at 512 px takes seconds there)."""
    repeats: Optional[int] = None
    """Timed edits per measurement, reported as medians; default: 5 on CUDA (3 with --quick), 1 on the CPU."""
    model_size: IP2PSize = "sd15"
    """InstructPix2Pix architecture, random weights: sd15 (the real one), sdxl (SDXL InstructPix2Pix, edits at 768 px),
    or tiny / tiny-sdxl (quick smoke runs)."""
    output_dir: Path = Path(".bench")
    """Where the model, scenes, runs, logs and the results (bench.json, bench.md) go."""
    skip_training: bool = False
    """Skip the subprocess measurements: NeRF training (step times, memory) and ns-render on the run it writes."""
    variants: Optional[Tuple[Variant, ...]] = None
    """Methods whose training speed and peak memory are measured (none: `--variants` with no names). Default: all five
    on CUDA; the three NeRF ones on the CPU, where splats render through a pure-torch route meant for tests, whose
    speed says nothing about a GPU (name in2n-splat to measure it anyway)."""
    train_steps: int = 6
    """Timed training steps without an edit per variant (after one untimed warm-up step), reported as their mean:
    nerfacto trains its proposal networks on one step in six (from step 5000 on), so 6 consecutive steps are one
    cycle of its schedule."""
    train_edits: int = 2
    """Timed training steps with an edit per variant (after one untimed warm-up edit)."""
    train_args: Tuple[str, ...] = ()
    """Extra ns-train options appended to every in2n training measurement, e.g. `--train-args
    --pipeline.edit-count 2`. On the command line --train-args comes last: every argument after it is passed on."""
    prompt: str = "turn it into a bronze statue"
    """The instruction (random weights: it only sets the text encoder's input)."""
    seed: int = 0
    """Seeds the random weights and every edit's noise."""
    keep_model: bool = False
    """Keep the saved diffusion model (4.3 GB for sd15, 14 GB for sdxl) in OUTPUT_DIR/models instead of deleting it at
    the end."""
    compiled_variants: Optional[Tuple[Variant, ...]] = None
    """Methods whose training is also measured with --pipeline.compile-editor True (the edit's UNet compiled): step
    times, the one-off compile in the first edit step, peak memory. Default: in2n on CUDA; none on the CPU (compiling
    the SD-1.5 UNet takes many minutes there). `--compiled-variants` with no names skips it."""
    convergence_variants: Optional[Tuple[Variant, ...]] = None
    """Methods whose whole edit of the device's scene is run until it converges (--pipeline.stop-when-converged True)
    with the negative editor, which edits in no time: the steps, the edits and the wall time the scene takes to absorb
    an edit, with each method's own schedule. The report adds an estimate with InstructPix2Pix from the edit
    measurements. Default: in2n-lite and in2n-splat on CUDA without --quick; none on the CPU, where the runs take tens
    of minutes.
    `--convergence-variants` with no names skips it."""
    concurrency_variant: Optional[Variant] = "in2n-lite"
    """Method whose training is timed with edits beside training and with edits that stop it; None: skip."""
    intervals: Optional[int] = None
    """Timed edit intervals (edit_rate steps with one edit each) per run of the concurrency and --num-devices
    measurements, after an untimed one; default 3 (2 with --quick)."""
    num_devices: Optional[Tuple[int, ...]] = None
    """Device counts the edit of --scaling-variant is trained on, one run each (ns-train --machine.num-devices N),
    timed side by side over whole edit intervals: steps/s and views edited per second. Default on CUDA: 1 and every
    visible GPU when more than one is visible; none otherwise. On the CPU, `--num-devices 1 2` runs 2 processes over
    gloo that share the cores: it exercises the measurement, not a speed-up."""
    scaling_variant: Variant = "in2n"
    """Method of the --num-devices runs (a NeRF variant: splat edits run on one device). Its views per edit are raised
    to a multiple of the largest device count, so that every device edits a share of every edit, in every run."""
    compile_views: Optional[Tuple[int, ...]] = None
    """Views per edit the editor compiled with --pipeline.compile-editor is timed with, against the same editor
    uncompiled, in the first of --precisions at every size. Default: 1 on CUDA (1 and 4 without --quick; each batch
    size compiles anew, which takes about a minute); none on the CPU, where compiling the SD-1.5 UNet takes many
    minutes. `--compile-views` with no value skips it."""


@dataclass(frozen=True)
class Plan:
    """What a run measures on its device: the options, with the device's defaults filled in."""

    device: DeviceName
    """Where everything runs."""
    sizes: Tuple[int, ...]
    """Square view sizes (px) the edits are timed at."""
    views: Tuple[int, ...]
    """Views per edit, each measured."""
    precisions: Tuple[Precision, ...]
    """InstructPix2Pix precisions the edits are timed in."""
    timed_passes: int
    """UNet passes run per timed edit."""
    repeats: int
    """Timed edits per measurement (medians reported)."""
    warm_up_s: float
    """Seconds of GPU work before the first timing of a process (0 on the CPU)."""
    training_modes: Tuple[Mode, ...]
    """Modes the training steps are measured in."""
    measure_render: bool
    """Whether ns-render is measured on the run the training wrote."""
    intervals: int
    """Timed edit intervals per run of the concurrency and device-count measurements."""
    compile_views: Tuple[int, ...]
    """Views per edit the compiled editor is timed with (none: not measured)."""
    compiled_variants: Tuple[Variant, ...]
    """Methods whose training is also measured with the compiled editor."""
    variants: Tuple[Variant, ...] = NERF_VARIANTS
    """Methods whose training is measured."""
    convergence_variants: Tuple[Variant, ...] = ()
    """Methods whose edit is run until it converges."""
    num_devices: Tuple[int, ...] = ()
    """Device counts the edit is timed on (none: not measured)."""


def native_edit_size(model_size: IP2PSize) -> int:
    """The size (px) the editor of a random model of this size works at: its family's (512, or 768 for SDXL)."""
    return (SDXL_INSTRUCT_PIX2PIX if IP2P_SHAPES[model_size].sdxl else SD_INSTRUCT_PIX2PIX).native_size


def make_plan(config: BenchConfig, device: DeviceName, gpus: int = 0) -> Plan:
    """The measurements of `config` on `device`, on a machine with `gpus` visible CUDA devices; raises BenchError for
    options the machine cannot run."""
    cuda = device == "cuda"
    precisions = config.precisions if config.precisions is not None else (("fp16", "fp32") if cuda else ("fp32",))
    if not cuda and "fp16" in precisions:
        raise BenchError("--precisions fp16 needs --device cuda: on the CPU InstructPix2Pix runs in fp32 only.")
    native = native_edit_size(config.model_size)
    sizes = config.sizes if config.sizes is not None else ((native,) if cuda else (native // 2, native))
    views = config.views if config.views is not None else ((1, 2, 4) if cuda else (2,))
    compile_views = config.compile_views
    if compile_views is None:
        compile_views = ((1,) if config.quick else (1, 4)) if cuda else ()
    if any(n < 1 for n in (*views, *compile_views)) or any(size < 8 for size in sizes):
        raise BenchError("--views and --compile-views count from 1, and --sizes from 8 px.")
    timed_passes = config.timed_passes if config.timed_passes is not None else (config.steps if cuda else 2)
    repeats = config.repeats if config.repeats is not None else ((3 if config.quick else 5) if cuda else 1)
    intervals = config.intervals
    return Plan(
        device=device,
        sizes=tuple(sizes),
        views=tuple(views),
        precisions=tuple(precisions),
        timed_passes=min(config.steps, max(1, timed_passes)),
        repeats=max(1, repeats),
        warm_up_s=(3.0 if config.quick else 10.0) if cuda else 0.0,
        training_modes=("ours",) if config.quick else MODES,
        measure_render=not config.quick,
        intervals=intervals if intervals is not None else (2 if config.quick else 3),
        compile_views=tuple(compile_views),
        compiled_variants=tuple(
            config.compiled_variants if config.compiled_variants is not None else (("in2n",) if cuda else ())
        ),
        variants=tuple(
            config.variants
            if config.variants is not None
            else (NERF_VARIANTS + SPLAT_VARIANTS if cuda else NERF_VARIANTS)
        ),
        convergence_variants=tuple(
            config.convergence_variants
            if config.convergence_variants is not None
            else (("in2n-lite", "in2n-splat") if cuda and not config.quick else ())
        ),
        num_devices=device_counts(config, cuda, gpus),
    )


def device_counts(config: BenchConfig, cuda: bool, gpus: int) -> Tuple[int, ...]:
    """The device counts the edit is timed on (--num-devices, or the device's default), checked against the machine
    and the variant."""
    if config.num_devices is None:
        counts: Tuple[int, ...] = (1, gpus) if cuda and gpus > 1 else ()
    else:
        counts = tuple(sorted(set(config.num_devices)))
    if not counts:
        return ()
    if counts[0] < 1:
        raise BenchError("--num-devices counts devices from 1.")
    if cuda and counts[-1] > gpus:
        raise BenchError(
            f"--num-devices {counts[-1]}: this machine has {gpus} CUDA device(s) visible. Use at most {gpus}, or "
            "--device cpu to run the processes on the CPU."
        )
    if config.scaling_variant in SPLAT_VARIANTS:
        raise BenchError(
            f"--scaling-variant {config.scaling_variant}: a splat edit runs on one device; measure a NeRF variant "
            f"({', '.join(NERF_VARIANTS)})."
        )
    return counts
