"""Edit measurements: the time per edited view, component by component, and its peak memory, ours against the
reference, per view size, precision and number of views per edit.

Ours is the package's editor as the pipeline builds it (the views of an edit batched into one UNet call, condition
latents cached), timed on the second edit of the same views: a run edits every view many times. The reference is
`ReferenceModeEditor` on the same networks. Both compute the same images.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor

from bench.compiled import measure_compiled
from bench.config import BenchConfig, Plan, Precision
from bench.devices import free_memory, warm_up
from bench.memory import PhaseMemory
from bench.profiling import (
    TIMED_METHODS,
    Profile,
    clock,
    make_resident,
    median,
    median_summary,
    ratios,
    timed_edit,
)
from bench.progress import log
from bench.reference_editor import ReferenceModeEditor
from bench.training import trainer_config, training_setup
from in2n.dataset_update.loop import edit_seed
from in2n.editors.base import NUM_TRAIN_TIMESTEPS, EditSettings, view_generator
from in2n.editors.ddim import ddim_schedule
from in2n.editors.factory import EditorConfig, build_editor
from in2n.editors.instruction import InstructionEditor, resize
from in2n.editors.sizing import edit_size
from in2n.synthetic.scene import SceneConfig, write_scene

EDIT_COMPONENTS = ("nerf_render", "vae_encode_render", "vae_encode_condition", "unet", "vae_decode", "other", "total")


def measure_edits(config: BenchConfig, plan: Plan, model: Path, work: Path) -> Dict[str, Any]:
    """Per size: the NeRF render of the views to edit, then the edits in every precision and view count."""
    results: Dict[str, Any] = {}
    for size in plan.sizes:
        scene = work / "scenes" / f"{size}px"
        write_scene(scene, SceneConfig(num_views=max(10, 2 * max(plan.views)), width=size, height=size, supersample=1))
        count = max(plan.views + plan.compile_views)
        log(f"NeRF renders of {count} views at {size} px")
        warm_up(plan.device, plan.warm_up_s)
        renders, originals, render = render_views(scene, plan, count)
        results[str(size)] = {"render": render, "edits": {}}
        for precision in plan.precisions:
            editor = benchmark_editor(model, precision, plan.device, max(plan.sizes))
            warm_up(plan.device, plan.warm_up_s)  # loading the editor left the GPU idle for seconds
            fresh_views = itertools.count()
            by_views = results[str(size)]["edits"][precision] = {}
            for views in plan.views:
                log(f"edits at {size} px, {precision}: {views} view(s) per edit, {config.steps} DDIM steps")
                by_views[str(views)] = measure_edit(
                    config, plan, editor, renders[:views], originals[:views], render["seconds"], fresh_views
                )
            if plan.compile_views and precision == plan.precisions[0]:
                compiled = benchmark_editor(model, precision, plan.device, max(plan.sizes), compile_unet=True)
                results[str(size)]["compiled"] = measure_compiled(
                    config, plan, editor, compiled, renders, originals, precision
                )
                del compiled
            del editor
            free_memory(plan.device)
    return results


def benchmark_editor(
    model: Path, precision: Precision, device: str, max_size: int, compile_unet: bool = False
) -> InstructionEditor:
    """The package's editor as a run builds it (with `compile_unet`, as --pipeline.compile-editor builds it), with
    every weight read once."""
    options = EditorConfig(
        ip2p_model=str(model),
        ip2p_use_full_precision=precision == "fp32",
        max_edit_size=max_size,
        compile_editor=compile_unet,
    )
    editor = build_editor(options, device)
    make_resident(*[value for value in vars(editor).values() if isinstance(value, torch.nn.Module)])
    return editor  # type: ignore[return-value]


def render_pipeline(scene: Path, device: str):
    """An in2n pipeline of the device's nerfacto on `scene`, set up as ns-render does (no diffusion model)."""
    setup = training_setup(device)
    config = trainer_config("in2n", ["--pipeline.datamanager.data", str(scene)], setup)
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    pipeline.eval()
    return pipeline


def render_views(scene: Path, plan: Plan, count: int) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """The first `count` training views rendered by an untrained NeRF, their originals [count, 3, H, W] on the CPU,
    and the median seconds and the peak memory of rendering one view."""
    memory = PhaseMemory.for_device(plan.device)
    pipeline = render_pipeline(scene, plan.device)
    pipeline.render_view(0)  # the first render pays one-off costs
    seconds, renders = [], []
    for view in range(count):
        with memory.phase("render"):
            start = clock(plan.device)
            renders.append(pipeline.render_view(view).cpu())
            seconds.append(clock(plan.device) - start)
    images = pipeline.datamanager.training_images
    originals = torch.stack([images.original_rgb(v) for v in range(count)]).permute(0, 3, 1, 2).cpu()
    del pipeline
    free_memory(plan.device)
    render = {"seconds": median(seconds), "memory": memory.report()["render"]}
    return torch.stack(renders).permute(0, 3, 1, 2), originals, render


def measure_edit(
    config: BenchConfig,
    plan: Plan,
    editor: InstructionEditor,
    renders: Tensor,
    originals: Tensor,
    render_s: float,
    fresh_views: Iterator[int],
) -> Dict[str, Any]:
    """Time editing these views, ours against the reference, `plan.repeats` times each; medians per view.

    View ids only key the editor's cache of condition latents: each measurement takes ids no earlier one used, so the
    first edit of its views finds the cache empty, as in a run.
    """
    count = len(renders)
    seeds = [edit_seed(config.seed, 0, i) for i in range(count)]
    reported = EditSettings(diffusion_steps=config.steps)
    timed = replace(reported, diffusion_steps=plan.timed_passes)
    scaled = replace(reported, scale_steps_with_noise=True)
    reference = ReferenceModeEditor(editor)
    editor.prompt_embeddings(config.prompt)  # encoded once per prompt by both, before any edit
    warm_up_shapes(editor, renders, originals, config.prompt, timed, seeds, fresh_views)
    views = [next(fresh_views) for _ in range(count)]
    memory = PhaseMemory.for_device(plan.device)
    images: Dict[str, Tensor] = {}  # the last images of each mode

    def repeat(mode: str, edit: Callable[..., Tensor], settings: EditSettings, wrappers=()) -> List[Profile]:
        profiles = []
        for _ in range(plan.repeats):
            profile = Profile(plan.device)
            with memory.phase(mode):
                images[mode] = timed_edit(
                    profile, editor, edit, renders, originals, views, config.prompt, settings, seeds, wrappers=wrappers
                )
            profiles.append(profile)
        return profiles

    reference_profiles = repeat("reference", reference.edit, timed, [reference])
    # Every view is edited many times in a run: the steady state is an edit whose condition latents are cached.
    height, width = renders.shape[-2:]
    start = clock(plan.device)
    editor.encode_conditions(
        resize(originals, edit_size(height, width, editor.max_edit_size, editor.vae_scale_factor)), views
    )
    cold_condition_s = (clock(plan.device) - start) / count
    ours_profiles = repeat("ours", editor.edit, timed)

    per_call = per_call_model(reference_profiles, ours_profiles)
    lengths = [len(s) for s in editor.schedules([view_generator(s) for s in seeds], reported)]
    scaled_lengths = [len(s) for s in editor.schedules([view_generator(s) for s in seeds], scaled)]
    if timed.diffusion_steps == config.steps:
        scaled_profiles = repeat("ours_scaled_steps", editor.edit, scaled)
    else:
        # The timed run's components, with the UNet calls of the noise-scaled schedules.
        scaled_profiles = ours_profiles

    def summary(profiles: List[Profile], calls: List[int]) -> Dict[str, Any]:
        return median_summary([summarise(profile, count, render_s, calls, per_call) for profile in profiles])

    result = {
        "views": count,
        "steps": config.steps,
        "timed_passes": timed.diffusion_steps,
        "repeats": plan.repeats,
        "ours": summary(ours_profiles, call_sizes(lengths)),
        "reference": summary(reference_profiles, [1] * sum(lengths)),
        "ours_scaled_steps": summary(scaled_profiles, call_sizes(scaled_lengths)),
        "ours_condition_encode_first_edit": cold_condition_s,
        "max_abs_difference": float((images["ours"].float() - images["reference"].float()).abs().max()),
        "memory": memory.report(),
    }
    result["ratio"] = {name: ratios(result[name], result["reference"]) for name in ("ours", "ours_scaled_steps")}
    return result


def warm_up_shapes(
    editor: InstructionEditor,
    renders: Tensor,
    originals: Tensor,
    prompt: str,
    settings: EditSettings,
    seeds: Sequence[int],
    fresh_views: Iterator[int],
) -> None:
    """One untimed single-step edit of 1, 2, ..., all the views: every batch size a timed edit calls the networks with.

    The first call of a network at a new input shape pays one-off costs (kernel selection, allocations), up to a
    third of a call on a CPU; a run pays them once, so neither mode should have them in its steady-state time.
    """
    one_step = replace(settings, diffusion_steps=1)
    for count in range(1, len(renders) + 1):
        views = [next(fresh_views) for _ in range(count)]
        editor.edit(renders[:count], originals[:count], views, prompt, one_step, seeds[:count])


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


def per_call_model(single: Sequence[Profile], batched: Sequence[Profile]) -> Callable[[int], float]:
    """Seconds of a UNet call with n views, interpolated between the measured one-view and batched calls (medians)."""

    def typical(profiles: Sequence[Profile]) -> Tuple[int, float]:
        calls = [call for profile in profiles for call in profile.unet_calls]
        seconds = median([s for _, s in calls])
        assert seconds is not None
        return calls[0][0], seconds

    (n1, t1), (n2, t2) = typical(single), typical(batched)
    return lambda n: t1 if n2 == n1 else t1 + (t2 - t1) * (n - n1) / (n2 - n1)


def expected_scaled_fraction(steps: int) -> float:
    """Mean UNet passes of a noise-scaled edit over `steps`, over the noise levels an edit samples by default."""
    settings = EditSettings()
    low, high = int(NUM_TRAIN_TIMESTEPS * settings.lower_bound), int(NUM_TRAIN_TIMESTEPS * settings.upper_bound)
    levels = range(low, high + 1)
    return sum(len(ddim_schedule(t, steps, scale_with_noise=True)) for t in levels) / (len(levels) * steps)
