"""Benchmark of in2n against the original implementation's way of editing, with nothing to download.

InstructPix2Pix is built with the real architecture (the SD-1.5 UNet with 8 input channels, the SD VAE and the
CLIP ViT-L/14 text encoder) and random weights, so compute and memory are those of the real model. Measured:

- the time per edited view at each size, split into NeRF render, VAE encode (render, condition), UNet passes,
  VAE decode, for "ours" (the package's editor: views batched, condition latents cached) and for the "reference"
  (the original's edit, written out here: one view per UNet batch, condition latents encoded on every edit, a fixed
  number of DDIM steps whatever the noise level, `empty_cache()` after each edit);
- NeRF training steps per second with and without editing, and the peak memory of training, per method variant;
- the wall time and peak memory of `ns-render` on an in2n run, which never loads the diffusion model, against the
  same with the diffusion model loaded (as the original's pipeline did in every command);
- training steps per second over whole edit intervals with edits on a worker thread beside training
  (`--pipeline.concurrent-edits on`) against edits that stop training (the original's way).

Every result is reported as ours / reference, both measured in the same run. Results go to OUTPUT_DIR/bench.json
and OUTPUT_DIR/bench.md. Usage: `make bench` or `python scripts/bench.py --help`.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import torch
import tyro
from torch import Tensor

from in2n.editing.base import NUM_TRAIN_TIMESTEPS, Editor, EditSettings, check_batch, view_generator
from in2n.editing.ddim import ddim_schedule
from in2n.editing.ip2p import InstructPix2PixEditor, resize
from in2n.editing.sizing import edit_size
from in2n.method_configs import in2n, in2n_big, in2n_lite
from in2n.pipeline import edit_seed
from in2n.synthetic.cpu_preset import CPU_TRAINER_ARGS, SMALL_MODEL_ARGS
from in2n.synthetic.ip2p import IP2PSize, save_random_ip2p
from in2n.synthetic.lpips_backbone import write_random_alexnet
from in2n.synthetic.scene import SceneConfig, write_scene
from in2n.trainer import In2nTrainerConfig

Variant = Literal["in2n-big", "in2n", "in2n-lite"]
METHODS = {"in2n-big": in2n_big, "in2n": in2n, "in2n-lite": in2n_lite}
MODES = ("ours", "reference")
EDIT_COMPONENTS = ("nerf_render", "vae_encode_render", "vae_encode_condition", "unet", "vae_decode", "other", "total")
TIMED_METHODS = {
    "encode_renders": "vae_encode_render",
    "encode_conditions": "vae_encode_condition",
    "decode": "vae_decode",
}
"""Editor methods timed as a component of the edit, and the component they are counted in."""
TRAIN_SCENE = SceneConfig(num_views=20, width=64, height=48, seed=0)
"""The scene of the training and ns-render runs: the small CPU preset's, as in the end-to-end tests."""
NERFACTO_STEPS = 10
"""Steps of the nerfacto run the in2n runs start from; its quality does not change their speed."""
WORKER_FLAG = "--worker"
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
BIN = Path(sys.executable).parent


@dataclass
class BenchConfig:
    """Measure in2n ("ours") against the original implementation's behaviour ("reference") on this machine."""

    sizes: Tuple[int, ...] = (256, 512)
    """Square view sizes (px) the edit is timed at."""
    views: int = 2
    """Views per edit: ours edits them in one batched call (edit_count = views), the reference one at a time."""
    steps: int = 20
    """DDIM steps of the edits reported (the original's default)."""
    timed_passes: int = 2
    """UNet passes actually run per edit; below --steps, the remaining passes are added at the measured time per pass
    (a pass costs the same at every noise level) and the numbers are marked as derived."""
    model_size: IP2PSize = "sd15"
    """InstructPix2Pix architecture: sd15 (the real one, random weights) or tiny (a quick smoke run)."""
    output_dir: Path = Path(".bench")
    """Where the model, scenes, runs, logs and the results (bench.json, bench.md) go."""
    skip_training: bool = False
    """Skip the subprocess measurements: NeRF training (steps/s, memory) and ns-render on the run it writes."""
    variants: Tuple[Variant, ...] = ("in2n-big", "in2n", "in2n-lite")
    """Methods whose training speed and peak memory are measured (none: `--variants` with no names)."""
    train_steps: int = 3
    """Timed training steps without an edit per variant (after one untimed warm-up step)."""
    train_edits: int = 2
    """Timed training steps with an edit per variant (after one untimed warm-up edit)."""
    prompt: str = "turn it into a bronze statue"
    """The instruction (random weights: it only sets the text encoder's input)."""
    seed: int = 0
    """Seeds the random weights and every edit's noise."""
    keep_model: bool = False
    """Keep the saved diffusion model (4.3 GB for sd15) in OUTPUT_DIR/models instead of deleting it at the end."""
    concurrency_variant: Optional[Variant] = "in2n-lite"
    """Method whose training is timed with edits beside training and with edits that stop it; None: skip."""
    concurrency_intervals: int = 3
    """Timed edit intervals (edit_rate steps with one edit each) per mode."""


# ----------------------------------------------------------------------------------------------------------------
# The reference edit: the original implementation's behaviour, on the package's networks.


class ReferenceModeEditor(Editor):
    """The edit as the original implementation made it, on an InstructPix2PixEditor's networks.

    One view per UNet batch (three rows: text+image, image, neither), the original view's latents encoded anew on
    every edit, `diffusion_steps` DDIM steps whatever the noise level, and `torch.cuda.empty_cache()` after every
    edit. With the same settings it computes the same images as `InstructPix2PixEditor.edit`.
    """

    name = "ip2p-reference"

    def __init__(self, editor: InstructPix2PixEditor) -> None:
        self.editor = editor

    def describe(self) -> str:
        return f"{self.editor.describe()}, edited the original implementation's way"

    @torch.no_grad()
    def encode_conditions(self, originals: Tensor) -> Tensor:
        """Latents of the original views, computed on every call (the mode of the posterior, unscaled)."""
        editor = self.editor
        return editor.vae.encode(originals.to(editor.device, editor.dtype) * 2.0 - 1.0).latent_dist.mode()

    @torch.no_grad()
    def edit(
        self,
        renders: Tensor,
        originals: Tensor,
        views: Sequence[int],
        prompt: str,
        settings: EditSettings,
        seeds: Sequence[int],
    ) -> Tensor:
        check_batch(renders, originals, views, seeds)
        # The original always ran `diffusion_steps` steps, spread over [0, noise level].
        settings = replace(settings, scale_steps_with_noise=False)
        return torch.cat(
            [
                self._edit_view(renders[i : i + 1], originals[i : i + 1], prompt, settings, seed)
                for i, seed in enumerate(seeds)
            ]
        )

    def _edit_view(self, render: Tensor, original: Tensor, prompt: str, settings: EditSettings, seed: int) -> Tensor:
        editor = self.editor
        height, width = render.shape[-2:]
        size = edit_size(height, width, editor.max_edit_size, editor.vae_scale_factor)
        # Draws from the view's generator in the package's order, so both editors see the same noise.
        generator = view_generator(seed)
        schedule = editor.schedules([generator], settings)[0]
        latents = editor.encode_renders(resize(render, size), [generator])
        noise = torch.randn(latents.shape[1:], generator=generator)[None].to(latents)
        start = torch.tensor([schedule.timesteps[0]], device=editor.device)
        noisy = editor.sampler.add_noise(latents.float(), noise.float(), start)
        condition = self.encode_conditions(resize(original, size))
        latents = editor.denoise(noisy, condition, editor.prompt_embeddings(prompt), [schedule], settings)
        edited = editor.decode(latents)
        if editor.device.type == "cuda":
            torch.cuda.empty_cache()
        return resize(edited, (height, width)).to(render)


# ----------------------------------------------------------------------------------------------------------------
# Timing the components of an edit.


@dataclass
class Profile:
    """Seconds spent per component, and every UNet call as (views in the call, seconds)."""

    sections: Dict[str, float] = field(default_factory=lambda: defaultdict(float))
    unet_calls: List[Tuple[int, float]] = field(default_factory=list)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sections[name] += time.perf_counter() - start


@contextmanager
def instrumented(profile: Profile, editor: InstructPix2PixEditor, *others: Editor) -> Iterator[Profile]:
    """Time the VAE and UNet work of edits made through `editor` (and editors built on it) into `profile`.

    The methods in TIMED_METHODS are shadowed by timed wrappers on the instances, and the UNet gets forward hooks,
    so the package's own `edit` is what gets timed.
    """

    def timed(name: str, method: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            with profile.section(name):
                return method(*args, **kwargs)

        return wrapper

    wrapped = [
        (target, attribute) for target in (editor, *others) for attribute in TIMED_METHODS if hasattr(target, attribute)
    ]
    for target, attribute in wrapped:
        setattr(target, attribute, timed(TIMED_METHODS[attribute], getattr(target, attribute)))
    starts: List[float] = []

    def before(module, args) -> None:
        starts.append(time.perf_counter())

    def after(module, args, output) -> None:
        profile.unet_calls.append((args[0].shape[0] // 3, time.perf_counter() - starts.pop()))

    hooks = [editor.unet.register_forward_pre_hook(before), editor.unet.register_forward_hook(after)]
    try:
        yield profile
    finally:
        for target, attribute in wrapped:
            delattr(target, attribute)
        for hook in hooks:
            hook.remove()


def timed_edit(
    profile: Profile,
    editor: InstructPix2PixEditor,
    edit: Callable[..., Tensor],
    *args: Any,
    wrappers: Sequence[Editor] = (),
) -> Tensor:
    """Run `edit(*args)` with its components timed into `profile`; the whole call is the "total" section."""
    with instrumented(profile, editor, *wrappers), profile.section("total"):
        return edit(*args)


def make_resident(*modules: torch.nn.Module) -> None:
    """Read every weight once.

    diffusers memory-maps the saved weights, so they only take memory (and page-fault time) when first read; the
    first UNet pass would pay for it. The original moved the model to the GPU at load time, which reads every weight.
    """
    with torch.no_grad():
        for module in modules:
            for tensor in module.state_dict().values():
                tensor.sum()


# ----------------------------------------------------------------------------------------------------------------
# Edit measurements.


def summarise(
    profile: Profile, views: int, render_s: float, calls: List[int], per_call: Callable[[int], float]
) -> Dict[str, Any]:
    """Per-view seconds of each component of an edit of `views` views that makes UNet calls of `calls` views each.

    UNet calls the timed run made are counted at their measured time; the others at `per_call(views in the call)`.
    """
    unet, derived = unet_seconds(profile.unet_calls, calls, per_call)
    parts = {name: profile.sections[name] for name in TIMED_METHODS.values()}
    other = profile.sections["total"] - sum(s for _, s in profile.unet_calls) - sum(parts.values())
    return {
        "nerf_render": render_s,
        **{name: seconds / views for name, seconds in parts.items()},
        "unet": unet / views,
        "other": other / views,
        "total": render_s + (sum(parts.values()) + unet + other) / views,
        "unet_calls": len(calls),
        "unet_view_passes": sum(calls),
        "measured_unet_calls": [list(call) for call in profile.unet_calls],
        "derived": derived,
    }


def unet_seconds(
    measured: List[Tuple[int, float]], calls: List[int], per_call: Callable[[int], float]
) -> Tuple[float, bool]:
    """Seconds of the UNet calls `calls`, and whether any is not the time of a measured call of that size."""
    unused = list(measured)
    seconds, derived = 0.0, False
    for views in calls:
        match = next((i for i, (n, _) in enumerate(unused) if n == views), None)
        if match is None:
            seconds += per_call(views)
            derived = True
        else:
            seconds += unused.pop(match)[1]
    return seconds, derived or bool(unused)


def call_sizes(lengths: Sequence[int]) -> List[int]:
    """Views per UNet call when schedules of these lengths are batched, aligned at their end (as `denoise` does)."""
    longest = max(lengths)
    return [sum(1 for length in lengths if k >= longest - length) for k in range(longest)]


def per_call_model(single: Profile, batched: Profile) -> Callable[[int], float]:
    """Seconds of a UNet call with n views, interpolated between the measured one-view and batched calls."""

    def mean(profile: Profile) -> Tuple[int, float]:
        return profile.unet_calls[0][0], sum(s for _, s in profile.unet_calls) / len(profile.unet_calls)

    (n1, t1), (n2, t2) = mean(single), mean(batched)
    return lambda n: t1 if n2 == n1 else t1 + (t2 - t1) * (n - n1) / (n2 - n1)


def render_pipeline(scene: Path):
    """An in2n pipeline of the small CPU model on `scene`, set up as ns-render does (no diffusion model)."""
    pipeline = trainer_config("in2n", ["--pipeline.datamanager.data", str(scene)]).pipeline.setup(
        device="cpu", test_mode="test"
    )
    pipeline.eval()
    return pipeline


@torch.no_grad()
def warm_up(editor: InstructPix2PixEditor, embeddings: Tensor, size: Tuple[int, int], batches: Sequence[int]) -> None:
    """One untimed VAE encode, UNet call and VAE decode per batch size, at the size of the edits to time.

    The first call of a network at a new input shape pays one-off costs (kernel selection, allocations), up to a
    third of a call on a CPU; a run pays them once, so neither mode should have them in its steady-state time.
    """
    height, width = edit_size(*size, editor.max_edit_size, editor.vae_scale_factor)
    factor = editor.vae_scale_factor
    for n in batches:
        editor.vae.encode(torch.zeros(n, 3, height, width, device=editor.device, dtype=editor.dtype))
        latents = torch.zeros(3 * n, 8, height // factor, width // factor, device=editor.device, dtype=editor.dtype)
        hidden = torch.cat([embeddings[0:1].expand(n, -1, -1), embeddings[1:2].expand(2 * n, -1, -1)])
        editor.unet(latents, torch.full((3 * n,), 500, device=editor.device), encoder_hidden_states=hidden)
        editor.decode(latents[:n, :4])


def measure_edits(config: BenchConfig, editor: InstructPix2PixEditor, scene: Path) -> Dict[str, Any]:
    """Time rendering and editing `config.views` views of the scene, ours against the reference."""
    pipeline = render_pipeline(scene)
    views = list(range(config.views))
    render_seconds, renders = [], []
    for view in views:
        start = time.perf_counter()
        renders.append(pipeline.render_view(view))
        render_seconds.append(time.perf_counter() - start)
    renders_t = torch.stack(renders).permute(0, 3, 1, 2).cpu()
    originals = torch.stack([pipeline.datamanager.original_rgb(v) for v in views]).permute(0, 3, 1, 2).cpu()
    del pipeline
    render_s = sum(render_seconds) / len(views)
    seeds = [edit_seed(config.seed, 0, view) for view in views]
    reported = EditSettings(diffusion_steps=config.steps)
    timed = replace(reported, diffusion_steps=min(config.steps, config.timed_passes))
    args = (renders_t, originals, views, config.prompt, timed, seeds)
    embeddings = editor.prompt_embeddings(config.prompt)  # encoded once per prompt by both, before any edit
    warm_up(editor, embeddings, tuple(renders_t.shape[-2:]), sorted({1, len(views)}))

    reference = ReferenceModeEditor(editor)
    reference_profile = Profile()
    reference_images = timed_edit(reference_profile, editor, reference.edit, *args, wrappers=[reference])

    # Every view is edited many times in a run: the steady state is an edit whose condition latents are cached.
    height, width = renders_t.shape[-2:]
    start = time.perf_counter()
    editor.encode_conditions(
        resize(originals, edit_size(height, width, editor.max_edit_size, editor.vae_scale_factor)), views
    )
    cold_condition_s = (time.perf_counter() - start) / len(views)
    ours_profile = Profile()
    ours_images = timed_edit(ours_profile, editor, editor.edit, *args)

    per_call = per_call_model(reference_profile, ours_profile)
    lengths = [len(s) for s in editor.schedules([view_generator(s) for s in seeds], reported)]
    result = {
        "views": len(views),
        "steps": config.steps,
        "timed_passes": timed.diffusion_steps,
        "ours": summarise(ours_profile, len(views), render_s, call_sizes(lengths), per_call),
        "reference": summarise(reference_profile, len(views), render_s, [1] * sum(lengths), per_call),
        "ours_condition_encode_first_edit": cold_condition_s,
        "max_abs_difference": float((ours_images - reference_images).abs().max()),
    }
    scaled = replace(reported, scale_steps_with_noise=True)
    scaled_lengths = [len(s) for s in editor.schedules([view_generator(s) for s in seeds], scaled)]
    if timed.diffusion_steps == config.steps:
        scaled_profile = Profile()
        timed_edit(scaled_profile, editor, editor.edit, *args[:4], scaled, seeds)
    else:
        # The timed run's components, with the UNet calls of the noise-scaled schedules.
        scaled_profile = ours_profile
    result["ours_scaled_steps"] = summarise(scaled_profile, len(views), render_s, call_sizes(scaled_lengths), per_call)
    result["ratio"] = {name: ratios(result[name], result["reference"]) for name in ("ours", "ours_scaled_steps")}
    return result


def expected_scaled_fraction(steps: int) -> float:
    """Mean UNet passes of a noise-scaled edit over `steps`, over the noise levels an edit samples by default."""
    settings = EditSettings()
    low, high = int(NUM_TRAIN_TIMESTEPS * settings.lower_bound), int(NUM_TRAIN_TIMESTEPS * settings.upper_bound)
    levels = range(low, high + 1)
    return sum(len(ddim_schedule(t, steps, scale_with_noise=True)) for t in levels) / (len(levels) * steps)


def ratios(ours: Dict[str, Any], reference: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """ours / reference for every number both have (None where the reference is 0)."""
    return {
        key: (value / reference[key] if reference[key] else None)
        for key, value in ours.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key in reference
    }


# ----------------------------------------------------------------------------------------------------------------
# Subprocess measurements: training and ns-render.


def trainer_config(method: str, args: Sequence[str]) -> In2nTrainerConfig:
    """The method's config with the small CPU model and trainer options, and `args` as on the ns-train command line."""
    return tyro.cli(
        tyro.conf.FlagConversionOff[In2nTrainerConfig],
        default=copy.deepcopy(METHODS[method].config),
        args=[*SMALL_MODEL_ARGS, *CPU_TRAINER_ARGS, "--vis", "tensorboard", *args],
    )


def run_measured(command: Sequence[str], log: Path, env: Dict[str, str]) -> Dict[str, float]:
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
        raise RuntimeError(f"{Path(command[0]).name} exited {result.returncode}; log {log}:\n{tail}")
    return {"wall_s": wall, "peak_rss_mb": int(peak_file.read_text()) / 1024}


def run_worker_process(kind: str, spec: Dict[str, Any], work: Path, name: str, env: Dict[str, str]) -> Dict[str, Any]:
    """Run a measurement of this script in its own process, so that its peak memory is its own."""
    spec_path, result_path = work / "logs" / f"{name}.spec.json", work / "logs" / f"{name}.result.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps({"kind": kind, "result": str(result_path), **spec}))
    usage = run_measured(
        [sys.executable, Path(__file__).resolve(), WORKER_FLAG, spec_path], work / "logs" / f"{name}.log", env
    )
    return {**json.loads(result_path.read_text()), **usage}


def set_up_trainer(spec: Dict[str, Any]) -> Tuple[In2nTrainerConfig, Any]:
    """The config and the trainer of a training measurement, set up as ns-train does."""
    config = trainer_config(spec["variant"], spec["args"])
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return config, trainer


def train_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Set up an in2n trainer like ns-train and time its training steps with and without an edit."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    if spec["mode"] == "reference":
        import in2n.editing.factory as factory

        build = factory.build_editor
        factory.build_editor = lambda config, default_device: ReferenceModeEditor(build(config, default_device))
    start = time.perf_counter()
    config, trainer = set_up_trainer(spec)
    setup_s = time.perf_counter() - start

    def step(number: int) -> float:
        # The body of nerfstudio's Trainer.train loop for one step.
        start = time.perf_counter()
        trainer.pipeline.train()
        for callback in trainer.callbacks:
            callback.run_callback_at_location(number, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(number)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(number, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        return time.perf_counter() - start

    rate = trainer.pipeline.config.edit_rate
    plain_steps = [s for s in range(1, (spec["steps"] + 1) * rate + 1) if s % rate][: spec["steps"] + 1]
    edit_steps = [rate * k for k in range(1, spec["edits"] + 2)]
    # The first step of each kind pays one-off costs (allocations, first kernels); it is not timed.
    plain = [step(s) for s in plain_steps][1:]
    edits = [step(s) for s in edit_steps][1:]
    trainer.save_checkpoint(edit_steps[-1])
    step_s, edit_step_s = sum(plain) / len(plain), sum(edits) / len(edits)
    return {
        "setup_s": setup_s,
        "step_s": step_s,
        "edit_step_s": edit_step_s,
        "steps_per_s": 1.0 / step_s,
        "steps_per_s_with_editing": rate / ((rate - 1) * step_s + edit_step_s),
        "edit_rate": rate,
        "step_times_s": plain,
        "edit_step_times_s": edits,
        "run_config": str(config.get_base_dir() / "config.yml"),
    }


def train_interval_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Set up an in2n trainer like ns-train and time whole edit intervals of nerfstudio's training loop."""
    config, trainer = set_up_trainer(spec)
    rate = trainer.pipeline.config.edit_rate

    # Every edit of the timed steps is finished and written at the end (the last one is waited for), so both modes
    # do the same work: intervals x (edit_rate steps + one edit). One-off costs of the first steps count in both.
    timed_steps = rate * spec["intervals"]
    start = time.perf_counter()
    for number in range(timed_steps):
        trainer.pipeline.train()
        trainer.train_iteration(number)
    trainer.pipeline.write_finished_edits(timed_steps)
    seconds = time.perf_counter() - start
    trainer.pipeline.stop_edit_worker()
    trainer.save_checkpoint(timed_steps)
    return {
        "steps_per_s": timed_steps / seconds,
        "interval_s": seconds / spec["intervals"],
        "edit_rate": rate,
        "run_config": str(config.get_base_dir() / "config.yml"),
    }


def render_reference_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """ns-render with the diffusion model loaded first, as every command of the original implementation did."""
    from nerfstudio.scripts.render import entrypoint

    from in2n.editing.loading import load_ip2p_pipeline

    start = time.perf_counter()
    diffusion = load_ip2p_pipeline(spec["model"], torch.float32)
    make_resident(diffusion.unet, diffusion.vae, diffusion.text_encoder)
    load_s = time.perf_counter() - start
    sys.argv = ["ns-render", *spec["args"]]
    entrypoint()
    del diffusion
    return {"ip2p_load_s": load_s}


def run_worker(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    worker = {"train": train_worker, "train-interval": train_interval_worker,
              "render-reference": render_reference_worker}[spec["kind"]]  # fmt: skip
    Path(spec["result"]).write_text(json.dumps(worker(spec)))


def measure_runs(config: BenchConfig, work: Path, model: Path, env: Dict[str, str]) -> Dict[str, Any]:
    """Training per variant and mode, then ns-render on the run the first one wrote, each in its own process."""
    scene = work / "scenes" / "train"
    write_scene(scene, TRAIN_SCENE)
    log(f"nerfacto, {NERFACTO_STEPS} steps (the scene the in2n runs edit)")
    run_measured(
        [BIN / "ns-train", "nerfacto", *CPU_TRAINER_ARGS, *SMALL_MODEL_ARGS, "--vis", "tensorboard",
         "--max-num-iterations", NERFACTO_STEPS, "--steps-per-save", NERFACTO_STEPS,
         "--pipeline.datamanager.train-num-rays-per-batch", 1024, "--output-dir", work / "runs",
         "--experiment-name", "scene", "--timestamp", "nerfacto", "nerfstudio-data", "--data", scene],
        work / "logs" / "nerfacto.log", env,
    )  # fmt: skip
    load_dir = work / "runs" / "scene" / "nerfacto" / "nerfacto" / "nerfstudio_models"

    def train_args(name: str) -> List[str]:
        return ["--pipeline.datamanager.data", str(scene), "--load-dir", str(load_dir),
                "--pipeline.ip2p-model", str(model), "--pipeline.prompt", config.prompt,
                "--pipeline.diffusion-steps", str(config.steps), "--output-dir", str(work / "runs"),
                "--experiment-name", "scene", "--timestamp", name]  # fmt: skip

    training: Dict[str, Any] = {}
    for variant in config.variants:
        training[variant] = {}
        for mode in MODES:
            log(f"training {variant}, {mode}")
            args = train_args(f"{variant}-{mode}")
            spec = {
                "variant": variant,
                "mode": mode,
                "args": args,
                "steps": config.train_steps,
                "edits": config.train_edits,
            }
            training[variant][mode] = run_worker_process("train", spec, work, f"train-{variant}-{mode}", env)
        training[variant]["ratio"] = ratios(training[variant]["ours"], training[variant]["reference"])

    concurrency: Dict[str, Any] = {}
    if config.concurrency_variant is not None:
        for mode, concurrent in (("ours", "on"), ("reference", "off")):
            variant = config.concurrency_variant
            log(f"training {variant} over whole edit intervals, edits beside training: {concurrent}")
            spec = {"variant": variant, "intervals": config.concurrency_intervals,
                    "args": [*train_args(f"{variant}-concurrent-{concurrent}"),
                             "--pipeline.concurrent-edits", concurrent]}  # fmt: skip
            concurrency[mode] = run_worker_process("train-interval", spec, work, f"concurrent-{concurrent}", env)
        concurrency["ratio"] = ratios(concurrency["ours"], concurrency["reference"])
        concurrency["variant"] = config.concurrency_variant

    runs = [modes["ours"] for modes in training.values()] + ([concurrency["ours"]] if concurrency else [])
    if not runs:
        return {"training": training}
    run_config = runs[0]["run_config"]
    render_args = ["dataset", "--load-config", run_config, "--split", "test", "--rendered-output-names", "rgb",
                   "--image-format", "png"]  # fmt: skip
    log("ns-render, ours")
    render = {
        "ours": {
            "ip2p_load_s": 0.0,
            **run_measured(
                [BIN / "ns-render", *render_args, "--output-path", work / "renders" / "ours"],
                work / "logs" / "render-ours.log",
                env,
            ),  # fmt: skip
        }
    }
    log("ns-render, reference (diffusion model loaded)")
    spec = {"model": str(model), "args": [*render_args, "--output-path", str(work / "renders" / "reference")]}
    render["reference"] = run_worker_process("render-reference", spec, work, "render-reference", env)
    render["ratio"] = ratios(render["ours"], render["reference"])
    return {"training": training, "render": render, **({"concurrency": concurrency} if concurrency else {})}


# ----------------------------------------------------------------------------------------------------------------
# The run, the machine, the report.


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> Dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [
            line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    ram_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal"))
        ram_gb = int(total.split()[1]) / 1024**2
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": ram_gb,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": "cpu",
    }


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


def run(config: BenchConfig) -> Dict[str, Any]:
    """Run every measurement; writes and returns the results."""
    started = time.perf_counter()
    work = config.output_dir
    work.mkdir(parents=True, exist_ok=True)
    model = work / "models" / config.model_size
    results: Dict[str, Any] = {"machine": machine(), "config": json.loads(json.dumps(asdict(config), default=str))}
    with offline_environment(work) as env:
        log(f"building InstructPix2Pix ({config.model_size}, random weights) in {model}")
        start = time.perf_counter()
        save_random_ip2p(model, size=config.model_size, seed=config.seed)
        results["model_save_s"] = time.perf_counter() - start
        try:
            editor = InstructPix2PixEditor(str(model), torch.device("cpu"))
            make_resident(editor.unet, editor.vae, editor.text_encoder)
            results["edit"] = {}
            for size in config.sizes:
                scene = work / "scenes" / f"{size}px"
                write_scene(
                    scene, SceneConfig(num_views=max(10, 2 * config.views), width=size, height=size, supersample=1)
                )
                log(f"edits at {size} px: {config.views} views, {config.steps} DDIM steps")
                results["edit"][str(size)] = measure_edits(config, editor, scene)
            results["expected_scaled_unet_fraction"] = expected_scaled_fraction(config.steps)
            del editor
            gc.collect()
            if not config.skip_training:
                results.update(measure_runs(config, work, model, env))
        finally:
            if not config.keep_model:
                shutil.rmtree(model, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - started
    results["peak_rss_mb_harness"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (work / "bench.json").write_text(json.dumps(results, indent=2))
    (work / "bench.md").write_text(markdown(results))
    log(f"done in {results['wall_s'] / 60:.1f} min: {work / 'bench.md'}")
    return results


EDIT_ROWS = {
    "nerf_render": "NeRF render",
    "vae_encode_render": "VAE encode, render",
    "vae_encode_condition": "VAE encode, original view (condition)",
    "unet": "UNet passes",
    "vae_decode": "VAE decode",
    "other": "other (noise, DDIM updates, resize)",
    "total": "**total per view**",
}
DERIVED_KEYS = ("unet", "total")
"""The numbers of an edit that include extrapolated UNet passes when the run timed fewer than --steps."""
TRAIN_ROWS = {
    "setup_s": "setup: scene, checkpoint, InstructPix2Pix (s)",
    "step_s": "training step without edit (s)",
    "edit_step_s": "training step with an edit (s)",
    "steps_per_s": "steps/s without editing",
    "steps_per_s_with_editing": "steps/s with editing",
    "peak_rss_mb": "peak memory, RSS (MB)",
}
RENDER_ROWS = {
    "wall_s": "wall time: start-up + 2 test views (s)",
    "ip2p_load_s": "of which loading InstructPix2Pix (s)",
    "peak_rss_mb": "peak memory, RSS (MB)",
}


def number(value: Optional[float], derived: bool = False) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return text + ("*" if derived else "")


def markdown(results: Dict[str, Any]) -> str:
    """The results as the tables quoted in the README."""
    config, host = results["config"], results["machine"]
    ram = f"{host['ram_gb']:.0f} GB RAM" if host["ram_gb"] else "RAM unknown"
    lines = [
        "# in2n benchmark: ours / reference",
        "",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['torch_threads']} torch threads), {ram}; "
        f"torch {host['torch']}, Python {host['python']}, {host['platform']}; everything on the CPU, fp32.",
        f"InstructPix2Pix: {config['model_size']} architecture, random weights. "
        f"Run time {results['wall_s'] / 60:.1f} min.",
        "",
    ]
    for size, edit in results.get("edit", {}).items():
        ours, reference, scaled = edit["ours"], edit["reference"], edit["ours_scaled_steps"]
        lines += [
            f"## Edit at {size}x{size} px: seconds per view ({edit['views']} views, {edit['steps']} DDIM steps)",
            "",
            "| component | ours | reference | ours / reference |",
            "|---|---|---|---|",
        ]
        for key, label in EDIT_ROWS.items():
            mark = key in DERIVED_KEYS
            lines.append(
                f"| {label} | {number(ours[key], mark and ours['derived'])} | "
                f"{number(reference[key], mark and reference['derived'])} | {number(edit['ratio']['ours'][key])} |"
            )
        lines += [
            f"| total per view, --pipeline.scale-steps-with-noise True | "
            f"{number(scaled['total'], scaled['derived'])} | {number(reference['total'], reference['derived'])} | "
            f"{number(edit['ratio']['ours_scaled_steps']['total'])} |",
            f"| UNet calls per edit of {edit['views']} views (view-passes) | {ours['unet_calls']} "
            f"({ours['unet_view_passes']}); noise-scaled {scaled['unet_calls']} ({scaled['unet_view_passes']}) | "
            f"{reference['unet_calls']} ({reference['unet_view_passes']}) | |",
            "",
            "First edit of a view (ours, condition not yet cached): "
            f"+{number(edit['ours_condition_encode_first_edit'])} s per view. Largest difference between the "
            f"images ours and the reference produced: {edit['max_abs_difference']:.1e}. UNet passes timed per edit: "
            f"{edit['timed_passes']} of {edit['steps']}.",
            "",
        ]
    if results.get("training"):
        lines += [
            "## Training (CPU preset: small nerfacto, 20 views of 64x48, edit_count 1)",
            "",
            "| variant | measurement | ours | reference | ours / reference |",
            "|---|---|---|---|---|",
        ]
        for variant, modes in results["training"].items():
            for key, label in TRAIN_ROWS.items():
                mark = key == "steps_per_s_with_editing"
                if mark:
                    label = f"{label} every {modes['ours']['edit_rate']} steps"
                lines.append(
                    f"| {variant} | {label} | {number(modes['ours'][key], mark)} | "
                    f"{number(modes['reference'][key], mark)} | {number(modes['ratio'][key])} |"
                )
        lines.append("")
    if "render" in results:
        render = results["render"]
        lines += [
            "## ns-render on an in2n run (the reference loads InstructPix2Pix first, as the original did)",
            "",
            "| measurement | ours | reference | ours / reference |",
            "|---|---|---|---|",
        ]
        for key, label in RENDER_ROWS.items():
            lines.append(
                f"| {label} | {number(render['ours'][key])} | {number(render['reference'][key])} | "
                f"{number(render['ratio'][key])} |"
            )
        lines.append("")
    if "concurrency" in results:
        concurrency = results["concurrency"]
        lines += [
            f"## Edits beside training ({concurrency['variant']}, an edit every {concurrency['ours']['edit_rate']} "
            "steps, both on the CPU)",
            "",
            "| measurement | ours: --pipeline.concurrent-edits on | reference: edits stop training | ours / ref. |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("steps_per_s", "steps/s over whole edit intervals"),
            ("interval_s", "seconds per interval"),
        ):
            lines.append(
                f"| {label} | {number(concurrency['ours'][key])} | {number(concurrency['reference'][key])} | "
                f"{number(concurrency['ratio'][key])} |"
            )
        lines.append("")
    lines += [
        "## Notes",
        "",
        "- ours: the package's InstructPix2PixEditor as the pipeline uses it, all views in one batched UNet call "
        "(edit_count = views), condition latents cached (the second edit of the same views: the steady state of a "
        "run). reference: one view per UNet call, condition latents encoded on every edit, the same fixed number of "
        "DDIM steps at every noise level, empty_cache() after each edit (a no-op on the CPU).",
        f"- * derived: the run timed {config['timed_passes']} UNet passes per edit; the other passes are added at the "
        "measured seconds per pass (a pass costs the same at every noise level). The noise-scaled row uses the UNet "
        "calls of the noise-scaled schedules of the same seeds, at the measured seconds per call (interpolated in the "
        "number of views per call). Over all noise levels, a noise-scaled edit runs "
        f"{results['expected_scaled_unet_fraction']:.2f} of the passes on average.",
        "- The NeRF render of a view is the same computation in both modes (measured once per size).",
        "- Ours and the reference compute the same images; their difference is fp32 rounding between batch sizes "
        "(different convolution algorithms), amplified by the guidance scales and the random weights.",
    ]
    if results.get("training"):
        lines += [
            "- Training: one process per variant and mode; step times are means over the timed steps after an untimed "
            "warm-up step; steps/s with editing (*) = edit_rate / ((edit_rate - 1) x step + edit step). On the CPU "
            "InstructPix2Pix runs in fp32 whatever the variant, so in2n and in2n-big are the same computation here; "
            "in2n-lite has no LPIPS and 4096 rays per step instead of 16384.",
            "- Peak memory: the peak resident set size of each measurement's process and its children (os.wait4, in a "
            "small launcher process so that the harness's own memory is not counted).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == [WORKER_FLAG]:
        run_worker(Path(sys.argv[2]))
        return
    run(tyro.cli(BenchConfig))


if __name__ == "__main__":
    main()
