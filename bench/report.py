"""bench.md: the results as tables of ours against the reference, with the device they were measured on."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

NOT_MEASURED = "not measured"
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
EDIT_MODES = {"ours": "ours", "reference": "reference", "ours_scaled_steps": "ours, noise-scaled steps"}
TRAIN_ROWS: Dict[str, Tuple[str, float]] = {
    "setup_s": ("setup: scene, checkpoint, InstructPix2Pix (s)", 1.0),
    "step_s": ("ms per training step without edit", 1000.0),
    "edit_step_s": ("ms per training step with an edit", 1000.0),
    "edit_step_per_view_s": ("ms per edited view in a step with an edit", 1000.0),
    "steps_per_s": ("steps/s without editing", 1.0),
    "steps_per_s_with_editing": ("steps/s with editing", 1.0),
    "peak_rss_mb": ("peak memory, RSS (MB)", 1.0),
    "peak_allocated_mb": ("peak GPU memory, max_memory_allocated (MB)", 1.0),
    "peak_reserved_mb": ("peak GPU memory, max_memory_reserved (MB)", 1.0),
}
"""Row label and the factor from the stored number (seconds, MB) to the shown one."""
TRAINING_MODES = ("ours", "reference", "compiled")
"""The modes a variant's training is measured in: the package's defaults, the original's way of editing, and the
package with its editor compiled."""
COMPILED_TRAIN_ROWS: Dict[str, Tuple[str, float]] = {
    "first_edit_step_s": ("the first step with an edit, compiling included (s)", 1.0),
    "edit_step_s": ("ms per training step with an edit", 1000.0),
    "steps_per_s_with_editing": ("steps/s with editing", 1.0),
    "peak_allocated_mb": ("peak GPU memory, max_memory_allocated (MB)", 1.0),
    "peak_reserved_mb": ("peak GPU memory, max_memory_reserved (MB)", 1.0),
    "peak_rss_mb": ("peak memory, RSS (MB)", 1.0),
}
PHASE_ROWS = {
    "setup": "setup: scene, checkpoint, InstructPix2Pix",
    "train_step": "training step without edit",
    "edit_step": "training step with an edit",
    "render": "- of which the render of the view to edit",
    "edit": "- of which the edit",
    "nerf": "- of which the rest: NeRF forward/backward, optimizer",
    "eval_image": "nerfstudio's eval image (every steps_per_eval_image steps)",
}
MEMORY_COLUMNS = (
    ("rss", "peak_mb", "RSS peak (MB)"),
    ("rss", "above_start_mb", "RSS above start (MB)"),
    ("allocated", "peak_mb", "CUDA allocated peak (MB)"),
    ("allocated", "above_start_mb", "allocated above start (MB)"),
    ("reserved", "peak_mb", "CUDA reserved peak (MB)"),
)
"""Columns of the per-phase memory tables: counter, value, heading; a table shows the counters it has."""
RENDER_ROWS = {
    "wall_s": "wall time: start-up + 2 test views (s)",
    "ip2p_load_s": "of which loading InstructPix2Pix (s)",
    "peak_rss_mb": "peak memory, RSS (MB)",
}
CONCURRENCY_ROWS = {
    "steps_per_s": "steps/s over whole edit intervals",
    "interval_s": "seconds per interval",
    "peak_rss_mb": "peak memory, RSS (MB)",
    "peak_allocated_mb": "peak GPU memory, max_memory_allocated (MB)",
    "peak_reserved_mb": "peak GPU memory, max_memory_reserved (MB)",
}

SCALING_ROWS: Dict[str, Tuple[str, float]] = {
    "steps_per_s": ("steps/s over whole edit intervals", 1.0),
    "views_per_s": ("views edited per second over whole edit intervals", 1.0),
    "step_s": ("ms per training step without edit", 1000.0),
    "edit_step_s": ("ms per training step with an edit", 1000.0),
    "edit_view_s": ("ms per edited view: the step with an edit above one without, per view", 1000.0),
    "peak_rss_mb": ("peak memory, RSS of the largest process (MB)", 1.0),
    "peak_allocated_mb": ("peak GPU memory of rank 0, max_memory_allocated (MB)", 1.0),
    "peak_reserved_mb": ("peak GPU memory of rank 0, max_memory_reserved (MB)", 1.0),
}
SCALING_HEADING = "## Several devices (ns-train --machine.num-devices N)"


def number(value: Optional[float], derived: bool = False) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return text + ("*" if derived else "")


def medians_of(count: int, noun: str) -> str:
    """How a number of timed runs was summarised: "medians of 3 edits", or "one edit"."""
    return f"medians of {count} {noun}s" if count > 1 else f"one {noun}"


def cudnn_version(version: Optional[int]) -> str:
    """cuDNN's version as torch gives it (e.g. 90100) in dotted form."""
    if not version:
        return "none"
    return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"


def tcnn_text(results: Dict[str, Any]) -> str:
    """Whether nerfacto ran on tiny-cuda-nn in this run's training measurements."""
    used = [mode["tcnn"] for modes in results.get("training", {}).values() for mode in modes.values() if "tcnn" in mode]
    installed = "installed" if results["machine"]["tcnn_installed"] else "not installed"
    if not used:
        return f"{installed} (no training measured)"
    if any(used):
        return "used by nerfacto in the training measurements"
    return f"not used ({installed}): nerfacto ran its pure-torch hash grid and MLPs"


def device_lines(results: Dict[str, Any]) -> List[str]:
    host, config = results["machine"], results["config"]
    ram = f"{host['ram_gb']:.0f} GB RAM" if host["ram_gb"] else "RAM unknown"
    cpu = f"{host['cpu']}, {host['cores']} cores ({host['torch_threads']} torch threads), {ram}"
    software = f"torch {host['torch']}, Python {host['python']}, {host['platform']}"
    model = (
        f"InstructPix2Pix: {config['model_size']} architecture, random weights. Run time {results['wall_s'] / 60:.1f} "
        "min."
    )
    gpu = host.get("gpu")
    if gpu is None:
        return ["## Device", "", f"- CPU: {cpu}; everything on the CPU, fp32.", f"- {software}.",
                f"- tiny-cuda-nn: {tcnn_text(results)}.", f"- {model}", ""]  # fmt: skip
    return [
        "## Device",
        "",
        f"- GPU: {gpu['name']}, {gpu['memory_gb']:.0f} GB, compute capability {gpu['compute_capability']} "
        f"({gpu['visible_devices']} visible); CUDA {gpu['cuda']} (torch's build), cuDNN {cudnn_version(gpu['cudnn'])}.",
        f"- {software}.",
        f"- tiny-cuda-nn: {tcnn_text(results)}.",
        f"- Host: {cpu}.",
        f"- {model}",
        "",
    ]


def memory_columns(phases: Iterable[Optional[Dict[str, Any]]]) -> List[Tuple[str, str, str]]:
    """The memory columns the given phases have values for."""
    counters = {counter for phase in phases if phase for counter in phase}
    return [column for column in MEMORY_COLUMNS if column[0] in counters]


def memory_cells(phase: Optional[Dict[str, Any]], columns: List[Tuple[str, str, str]]) -> str:
    if not phase:
        return " | ".join("" for _ in columns)
    return " | ".join(number(phase[counter][value]) if counter in phase else "n/a" for counter, value, _ in columns)


def edit_lines(results: Dict[str, Any]) -> List[str]:
    plan = results["plan"]
    lines = [
        f"## Edits: seconds per view ({results['config']['steps']} DDIM steps; {medians_of(plan['repeats'], 'edit')})",
        "",
        "| size | precision | views per edit | ours | reference | ours / reference | ours, noise-scaled steps | "
        "noise-scaled / reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    combinations = [
        (size, precision, views, edit)
        for size, by_size in results["edit"].items()
        for precision, by_views in by_size["edits"].items()
        for views, edit in by_views.items()
    ]
    for size, precision, views, edit in combinations:
        ours, reference, scaled = edit["ours"], edit["reference"], edit["ours_scaled_steps"]
        lines.append(
            f"| {size} | {precision} | {views} | {number(ours['total'], ours['derived'])} | "
            f"{number(reference['total'], reference['derived'])} | {number(edit['ratio']['ours']['total'])} | "
            f"{number(scaled['total'], scaled['derived'])} | {number(edit['ratio']['ours_scaled_steps']['total'])} |"
        )
    phases = [by_size["render"]["memory"] for by_size in results["edit"].values()] + [
        phase for *_, edit in combinations for phase in edit["memory"].values()
    ]
    columns = memory_columns(phases)
    lines += [
        "",
        "### Peak memory per phase of an edit (the largest over the repeats)",
        "",
        "| size | precision | views per edit | phase | " + " | ".join(c[2] for c in columns) + " |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for size, by_size in results["edit"].items():
        lines.append(f"| {size} | | 1 | NeRF render of a view | {memory_cells(by_size['render']['memory'], columns)} |")
    for size, precision, views, edit in combinations:
        for mode, label in EDIT_MODES.items():
            if mode in edit["memory"]:
                cells = memory_cells(edit["memory"][mode], columns)
                lines.append(f"| {size} | {precision} | {views} | {label} | {cells} |")
    lines.append("")
    for size, by_size in results["edit"].items():
        if "compiled" in by_size:
            lines += compiled_lines(size, by_size["compiled"], plan["repeats"])
    for size, precision, _, edit in combinations:
        lines += edit_detail_lines(size, precision, edit)
    return lines


def compiled_lines(size: str, compiled: Dict[str, Any], repeats: int) -> List[str]:
    lines = [
        f"### The compiled editor (--pipeline.compile-editor) at {size} px, {compiled['precision']}: seconds per view "
        f"of a whole edit ({compiled['steps']} DDIM steps, {medians_of(repeats, 'edit')}, NeRF render not included)",
        "",
        "| views per edit | uncompiled | compiled | compiled / uncompiled | first 3 edits of the compiled editor (s) | "
        "largest image difference |",
        "|---|---|---|---|---|---|",
    ]
    for views, result in compiled["by_views"].items():
        first = ", ".join(number(s) for s in result["first_edits_s"])
        fell_back = "" if result["still_compiled"] else " (compiling failed: ran uncompiled)"
        lines.append(
            f"| {views} | {number(result['eager_s'])} | {number(result['compiled_s'])}{fell_back} | "
            f"{number(result['ratio'])} | {first} | {result['max_abs_difference']:.1e} |"
        )
    columns = memory_columns(compiled["memory"].values())
    lines += ["", "| phase | " + " | ".join(c[2] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for phase, memory in compiled["memory"].items():
        lines.append(f"| {phase}: the first edits (compiling) | {memory_cells(memory, columns)} |")
    return lines + [""]


def edit_detail_lines(size: str, precision: str, edit: Dict[str, Any]) -> List[str]:
    ours, reference, scaled = edit["ours"], edit["reference"], edit["ours_scaled_steps"]
    lines = [
        f"### Edit at {size}x{size} px, {precision}: seconds per view ({edit['views']} views, {edit['steps']} DDIM "
        "steps)",
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
    return lines + [
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


def training_lines(results: Dict[str, Any]) -> List[str]:
    training = results["training"]
    measured = [mode for modes in training.values() for name, mode in modes.items() if name in TRAINING_MODES]
    config = results["config"]
    lines = [
        f"## Training ({results['training_setup']}; the mean of {config['train_steps']} consecutive steps without an "
        f"edit, {medians_of(config['train_edits'], 'step')} with one)",
        "",
        "| variant | measurement | ours | reference | ours / reference |",
        "|---|---|---|---|---|",
    ]
    for variant, modes in training.items():
        for key, (label, factor) in TRAIN_ROWS.items():
            # Rows a variant's measurement does not have (a splat's per-view time, a NeRF's with the older harness).
            if not any(key in modes[mode] for mode in TRAINING_MODES if mode in modes):
                continue
            derived = key == "steps_per_s_with_editing"
            if derived:
                first = next(modes[mode] for mode in TRAINING_MODES if mode in modes)
                label = f"{label} every {first.get('edit_interval', first['edit_rate'])} steps"
            cells = [
                number(modes[mode][key] * factor, derived) if mode in modes else NOT_MEASURED
                for mode in ("ours", "reference")
            ]
            ratio = number(modes["ratio"][key]) if "ratio" in modes else ""
            lines.append(f"| {variant} | {label} | {cells[0]} | {cells[1]} | {ratio} |")
    lines.append("")
    columns = memory_columns(phase for mode in measured for phase in mode["phase_memory"].values())
    lines += compiled_training_lines(training)
    for variant, modes in training.items():
        for mode_name in TRAINING_MODES:
            if mode_name not in modes:
                continue
            mode = modes[mode_name]
            lines += [
                f"### Where a training step goes, and peak memory per phase: {variant}, {mode_name}",
                "",
                "| phase | median ms | " + " | ".join(c[2] for c in columns) + " |",
                "|---|---|" + "---|" * len(columns),
            ]
            for phase, label in PHASE_ROWS.items():
                seconds = mode["phase_s"].get(phase)
                time = number(seconds * 1000) if seconds is not None else "n/a"
                lines.append(f"| {label} | {time} | {memory_cells(mode['phase_memory'].get(phase), columns)} |")
            lines.append("")
    return lines


def compiled_training_lines(training: Dict[str, Any]) -> List[str]:
    """Training with the compiled editor against the same variant uncompiled (ours), where it was measured."""
    compared = {variant: modes for variant, modes in training.items() if "compiled_ratio" in modes}
    if not compared:
        return []
    lines = [
        "### Training with --pipeline.compile-editor True",
        "",
        "| variant | measurement | uncompiled | compiled | compiled / uncompiled |",
        "|---|---|---|---|---|",
    ]
    for variant, modes in compared.items():
        ours, compiled, ratio = modes["ours"], modes["compiled"], modes["compiled_ratio"]
        for key, (label, factor) in COMPILED_TRAIN_ROWS.items():
            if key in ours and key in compiled:
                lines.append(
                    f"| {variant} | {label} | {number(ours[key] * factor)} | {number(compiled[key] * factor)} | "
                    f"{number(ratio.get(key))} |"
                )
        edit = (ours["phase_s"].get("edit"), compiled["phase_s"].get("edit"))
        if None not in edit:
            lines.append(
                f"| {variant} | ms of the edit in a step with an edit | {number(edit[0] * 1000)} | "
                f"{number(edit[1] * 1000)} | {number(edit[1] / edit[0])} |"
            )
    return lines + [""]


def convergence_lines(results: Dict[str, Any]) -> List[str]:
    """Whole edits run until they converged, with the negative editor, and the estimate with InstructPix2Pix."""
    lines = [
        "## Time to converged (each method's schedule; the negative editor, which edits in no time)",
        "",
        "| variant | converged | steps | passes | edits | wall time (s) | peak RSS (MB) | with InstructPix2Pix, "
        "estimated (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, run in results["convergence"].items():
        per_view = edit_seconds_per_view(results, run["views_per_call"])
        estimate = number(run["wall_s"] + run["edits"] * per_view, derived=True) if per_view else NOT_MEASURED
        converged = "yes" if run["converged"] else f"no (stopped at {run['step_limit']} steps)"
        lines.append(
            f"| {variant} | {converged} | {run['steps']} | {run['passes']} | {run['edits']} | "
            f"{number(run['wall_s'])} | {number(run['peak_rss_mb'])} | {estimate} |"
        )
    return lines + [
        "",
        "Estimated (*): the wall time plus the edits times the seconds per view of the edit table (ours, the largest "
        "size, fp16 where measured, the variant's views per diffusion call).",
        "",
    ]


def edit_seconds_per_view(results: Dict[str, Any], views: int) -> Optional[float]:
    """Seconds per view of the package's edits at the largest size measured, fp16 if measured, `views` per call (or
    the nearest number measured)."""
    if not results.get("edit"):
        return None
    by_size = results["edit"][max(results["edit"], key=int)]["edits"]
    by_views = by_size.get("fp16") or next(iter(by_size.values()))
    nearest = min(by_views, key=lambda count: abs(int(count) - views))
    return by_views[nearest]["ours"]["total"]


def concurrency_lines(results: Dict[str, Any]) -> List[str]:
    concurrency = results["concurrency"]
    where = "one GPU" if results["machine"].get("gpu") else "the CPU"
    lines = [
        f"## Edits beside training ({concurrency['variant']}, an edit every {concurrency['ours']['edit_rate']} "
        f"steps, both on {where})",
        "",
        "| measurement | ours: --pipeline.concurrent-edits on | reference: edits stop training | ours / ref. |",
        "|---|---|---|---|",
    ]
    for key, label in CONCURRENCY_ROWS.items():
        if key in concurrency["ours"]:
            lines.append(comparison_row(label, concurrency, key))
    return lines + [""]


def comparison_row(label: str, block: Dict[str, Any], key: str) -> str:
    """A table row of one measurement: ours, the reference's, and their ratio."""
    return (
        f"| {label} | {number(block['ours'][key])} | {number(block['reference'][key])} | "
        f"{number(block['ratio'][key])} |"
    )


def scaling_lines(results: Dict[str, Any]) -> List[str]:
    """The edit on each device count measured, and each count against the smallest; or why it was not measured."""
    scaling = results.get("scaling")
    gpu = results["machine"].get("gpu")
    if not scaling:
        if gpu is None or gpu["visible_devices"] > 1:
            return []
        return [
            SCALING_HEADING,
            "",
            f"Not measured: {gpu['visible_devices']} CUDA device visible; it takes 2 or more.",
            "",
        ]
    skipped = [f"Not measured on {count} devices: {why}" for count, why in scaling.get("skipped", {}).items()]
    runs = scaling["by_devices"]
    counts = list(runs)
    if not counts:
        return [SCALING_HEADING, "", *skipped, ""]
    first = runs[counts[0]]
    units = ("GPU", "GPUs") if gpu else ("CPU process", "CPU processes")
    where = "" if gpu else "; on the CPU the processes share its cores, so this tests the path, not a speed-up"
    lines = [
        f"## Several devices ({scaling['variant']}, ns-train --machine.num-devices N; {scaling['edit_count']} views "
        f"per edit every {first['edit_rate']} steps, {first['timed_steps']} timed steps per run{where})",
        "",
        "| measurement | "
        + " | ".join(f"{count} {units[count != '1']}" for count in counts)
        + "".join(f" | {count} / {counts[0]}" for count in counts[1:])
        + " |",
        "|---|" + "---|" * (2 * len(counts) - 1),
    ]
    for key, (label, factor) in SCALING_ROWS.items():
        if key not in first:
            continue
        cells = [number(runs[count][key] * factor) for count in counts]
        cells += [number(scaling["ratio"][count].get(key)) for count in counts[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + ["", *(line for why in skipped for line in (why, ""))]


def render_lines(results: Dict[str, Any]) -> List[str]:
    render = results["render"]
    lines = [
        "## ns-render on an in2n run (the reference loads InstructPix2Pix first, as the original did)",
        "",
        "| measurement | ours | reference | ours / reference |",
        "|---|---|---|---|",
    ]
    for key, label in RENDER_ROWS.items():
        lines.append(comparison_row(label, render, key))
    return lines + [""]


def note_lines(results: Dict[str, Any]) -> List[str]:
    config = results["config"]
    cuda = results["machine"].get("gpu") is not None
    lines = ["## Notes", ""]
    if results.get("edit"):
        lines += edit_note_lines(results)
    if cuda:
        lines.append(
            f"- The GPU ran {results['plan']['warm_up_s']:.0f} s of matrix products before the timings of each "
            "process (its clocks ramp up over seconds)."
        )
    if results.get("edit") or results.get("training"):
        lines.append(
            "- Peak memory per phase: the highest value of each counter between the phase's start and end, and that "
            "less its value at the start (what the phase added). RSS: Linux's high-water mark, reset at every phase "
            "boundary through /proc/self/clear_refs. CUDA: torch.cuda.max_memory_allocated (tensors) and "
            "max_memory_reserved (the caching allocator's blocks), reset with torch.cuda.reset_peak_memory_stats."
        )
    if results.get("training"):
        lines += training_note_lines(cuda)
    if results.get("scaling"):
        lines.append(
            "- Several devices: one run per device count, launched as ns-train launches it (nerfstudio's launch, one "
            "process per device), an untimed edit interval, then whole edit intervals timed on rank 0 between two "
            "barriers. Each step ends in the processes' exchanges (DDP's gradient average, the gathered edits), so "
            "rank 0's clock covers the slowest process. Every run edits the same views per edit, a multiple of the "
            "largest device count, and trains on the same rays per step, shared out among the devices."
        )
    if config.get("train_args"):
        lines.append(f"- Every training measurement ran with the extra options `{' '.join(config['train_args'])}`.")
    return lines


def edit_note_lines(results: Dict[str, Any]) -> List[str]:
    """What the edit tables compare, and how their derived numbers were made."""
    config = results["config"]
    lines = [
        "- ours: the package's InstructPix2PixEditor as the pipeline uses it, all views in one batched UNet call "
        "(edit_count = views), condition latents cached (the second edit of the same views: the steady state of a "
        "run). reference: one view per UNet call, condition latents encoded on every edit, the same fixed number of "
        "DDIM steps at every noise level, empty_cache() after each edit (a no-op on the CPU).",
        "- * derived: the UNet passes beyond those timed per edit are added at the measured seconds per pass (a pass "
        "costs the same at every noise level); the noise-scaled numbers of such runs use the UNet calls of the "
        "noise-scaled schedules of the same seeds, at the measured seconds per call (interpolated in the number of "
        "views per call).",
        "- The NeRF render of a view is the same computation in both modes (measured once per size).",
        "- Ours and the reference compute the same images; their difference is rounding between batch sizes "
        "(different convolution algorithms), amplified by the guidance scales and the random weights.",
    ]
    if "expected_scaled_unet_fraction" in results:
        lines.append(
            f"- Over all noise levels, a noise-scaled edit of {config['steps']} steps runs "
            f"{results['expected_scaled_unet_fraction']:.2f} of the UNet passes on average."
        )
    return lines


def training_note_lines(cuda: bool) -> List[str]:
    """How the training steps were timed, and what differs between the variants."""
    precision = (
        "in2n-big edits in fp32, in2n and in2n-lite in fp16"
        if cuda
        else "on the CPU InstructPix2Pix runs in fp32 whatever the variant, so in2n and in2n-big are the same "
        "computation here"
    )
    return [
        "- Training: one process per variant and mode, steps numbered as in an edit of a nerfacto trained 30000 "
        "steps (nerfacto's proposal networks train on one step in six there; below step 10, on every step). Step "
        "times after an untimed first step of each kind: steps without an edit, the mean of consecutive steps "
        "(one cycle of the proposal schedule); steps with an edit, the median. Steps/s with editing (*) = "
        f"edit_rate / ((edit_rate - 1) x step + edit step). {precision[0].upper()}{precision[1:]}; in2n-lite has "
        "no LPIPS and 4096 rays per step instead of 16384. The phases of a step with an edit: the render of the "
        "view to edit, the edit, and the rest (NeRF forward and backward passes and the optimizer).",
        "- in2n-splat and in2n-splat-lite edit splatfacto (on CUDA gsplat's kernels; on the CPU the pure-torch "
        "route, whose speed says nothing about a GPU) in passes: their step with an edit is a pass over every "
        "view, its edits batched 4 (in2n-splat) or 1 (in2n-splat-lite) per diffusion call, and steps/s with "
        "editing = pass_every / ((pass_every - 1) x step + pass step).",
        "- Peak memory of a process: the peak resident set size of it and its children (os.wait4, in a small "
        "launcher process so that the harness's own memory is not counted), and on CUDA the allocator's peaks.",
    ]


def markdown(results: Dict[str, Any]) -> str:
    """The results as the tables quoted in bench/README.md."""
    lines = ["# in2n benchmark: ours / reference", "", *device_lines(results)]
    if results.get("edit"):
        lines += edit_lines(results)
    if results.get("training"):
        lines += training_lines(results)
    if results.get("convergence"):
        lines += convergence_lines(results)
    if "concurrency" in results:
        lines += concurrency_lines(results)
    lines += scaling_lines(results)
    if "render" in results:
        lines += render_lines(results)
    return "\n".join(lines + note_lines(results)) + "\n"
