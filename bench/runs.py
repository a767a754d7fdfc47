"""The measurements that run ns-train and ns-render, each in a process of its own: training steps per variant and
mode, training over whole edit intervals with edits beside training or stopping it, whole edits until they converge,
and ns-render on the run written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from bench.config import SPLAT_VARIANTS, BenchConfig, Plan
from bench.profiling import ratios
from bench.progress import log
from bench.scaling import edit_count_for, launch_problems_on
from bench.training import METHODS, NERFACTO_STEPS, SPLATFACTO_STEPS, model_args, training_setup
from bench.workers import nerfstudio_command, run_measured, run_worker_process
from in2n.runs.checkpoints import checkpoints_in, load_checkpoint_file
from in2n.synthetic.scene import write_scene


@dataclass(frozen=True)
class RunFolders:
    """Where the training measurements read and write."""

    work: Path
    """The benchmark's output folder."""
    scene: Path
    """The generated scene."""
    load_dir: Path
    """The checkpoints of the nerfacto run every in2n run starts from."""
    model: Path
    """The saved InstructPix2Pix."""
    splat_load_dir: Optional[Path] = None
    """The checkpoints of the splatfacto run every splat edit starts from (when a splat edit is measured)."""

    def base_of(self, variant: str) -> Path:
        """The checkpoints the variant's edit starts from."""
        if variant in SPLAT_VARIANTS:
            assert self.splat_load_dir is not None, "no splatfacto run was trained"
            return self.splat_load_dir
        return self.load_dir


def in2n_args(
    config: BenchConfig, folders: RunFolders, name: str, variant: str = "in2n", extra: Sequence[str] = ()
) -> List[str]:
    """ns-train options of an in2n training measurement named `name`: the common ones, the measurement's `extra`
    ones, and the user's --train-args last."""
    return ["--pipeline.datamanager.data", str(folders.scene), "--load-dir", str(folders.base_of(variant)),
            "--pipeline.ip2p-model", str(folders.model), "--pipeline.prompt", config.prompt,
            "--pipeline.diffusion-steps", str(config.steps), "--output-dir", str(folders.work / "runs"),
            "--experiment-name", "scene", "--timestamp", name, *extra, *config.train_args]  # fmt: skip


def train_nerfacto(plan: Plan, work: Path, model: Path, env: Dict[str, str]) -> RunFolders:
    """Generate the device's scene and train nerfacto on it for a few steps (and splatfacto, when a splat edit is
    measured); the folders of the in2n runs."""
    setup = training_setup(plan.device)
    scene = work / "scenes" / "train"
    write_scene(scene, setup.scene)
    log(f"nerfacto, {NERFACTO_STEPS} steps (the scene the in2n runs edit): {setup.description}")
    run_measured(
        [*nerfstudio_command("train"), "nerfacto", *setup.trainer_args, *setup.model_args, "--vis", "tensorboard",
         "--max-num-iterations", NERFACTO_STEPS, "--steps-per-save", NERFACTO_STEPS,
         "--pipeline.datamanager.train-num-rays-per-batch", 1024, "--output-dir", work / "runs",
         "--experiment-name", "scene", "--timestamp", "nerfacto", "nerfstudio-data", "--data", scene],
        work / "logs" / "nerfacto.log", env,
    )  # fmt: skip
    splat_load_dir = None
    if set(SPLAT_VARIANTS) & {*plan.variants, *plan.convergence_variants}:
        method = setup.splatfacto
        log(f"{method}, {SPLATFACTO_STEPS} steps (the splats the splat edits edit)")
        run_measured(
            [*nerfstudio_command("train"), method, *setup.trainer_args, *setup.splat_args, "--vis", "tensorboard",
             "--max-num-iterations", SPLATFACTO_STEPS, "--steps-per-save", SPLATFACTO_STEPS,
             "--output-dir", work / "runs", "--experiment-name", "scene", "--timestamp", "splatfacto",
             "nerfstudio-data", "--data", scene],
            work / "logs" / "splatfacto.log", env,
        )  # fmt: skip
        splat_load_dir = work / "runs" / "scene" / method / "splatfacto" / "nerfstudio_models"
    models = work / "runs" / "scene" / "nerfacto" / "nerfacto" / "nerfstudio_models"
    return RunFolders(work, scene, models, model, splat_load_dir)


def measure_runs(
    config: BenchConfig,
    plan: Plan,
    work: Path,
    model: Path,
    env: Dict[str, str],
    results: Dict[str, Any],
    save: Callable[[], None],
) -> None:
    """Training per variant and mode, edits beside training on and off, then ns-render on the first run written: into
    `results` ("training", "concurrency", "render"), calling `save()` after every measuring process."""
    folders = train_nerfacto(plan, work, model, env)
    common = {"device": plan.device, "warm_up_s": plan.warm_up_s}

    training: Dict[str, Any] = results.setdefault("training", {})
    for variant in plan.variants:
        training[variant] = {}
        modes = [*plan.training_modes, *(["compiled"] if variant in plan.compiled_variants else [])]
        for mode in modes:
            log(f"training {variant}, {mode}")
            # The compiled mode's option comes last, after any --train-args, so that the measurement is what it says.
            args = [*in2n_args(config, folders, f"{variant}-{mode}", variant),
                    *(["--pipeline.compile-editor", "True"] if mode == "compiled" else [])]  # fmt: skip
            spec = {**common, "variant": variant, "mode": mode, "steps": config.train_steps,
                    "edits": config.train_edits, "args": args}  # fmt: skip
            measured = training[variant]
            measured[mode] = run_worker_process("train", spec, work, f"train-{variant}-{mode}", env)
            if {"ours", "reference"} <= set(measured):
                measured["ratio"] = ratios(measured["ours"], measured["reference"])
            if {"ours", "compiled"} <= set(measured):
                measured["compiled_ratio"] = ratios(measured["compiled"], measured["ours"])
            save()

    concurrency: Dict[str, Any] = {}
    if config.concurrency_variant is not None:
        variant = config.concurrency_variant
        for mode, concurrent in (("ours", "on"), ("reference", "off")):
            log(f"training {variant} over whole edit intervals, edits beside training: {concurrent}")
            # The mode's option comes last, after any --train-args, so that the measurement is what it says.
            args = [*in2n_args(config, folders, f"{variant}-concurrent-{concurrent}", variant),
                    "--pipeline.concurrent-edits", concurrent]  # fmt: skip
            spec = {**common, "variant": variant, "intervals": plan.intervals, "args": args}
            concurrency[mode] = run_worker_process("train-interval", spec, work, f"concurrent-{concurrent}", env)
        concurrency["ratio"] = ratios(concurrency["ours"], concurrency["reference"])
        concurrency["variant"] = variant
        results["concurrency"] = concurrency
        save()

    if plan.num_devices:
        results["scaling"] = measure_scaling(config, plan, folders, env)
        save()

    if plan.convergence_variants:
        convergence: Dict[str, Any] = results.setdefault("convergence", {})
        for variant in plan.convergence_variants:
            log(f"{variant} with the negative editor until the edit converges")
            convergence[variant] = measure_convergence(config, plan, folders, variant, env)
            save()

    runs = [modes["ours"] for variant, modes in training.items() if "ours" in modes and variant not in SPLAT_VARIANTS]
    runs += [concurrency["ours"]] if concurrency else []
    if plan.measure_render and runs:
        results["render"] = measure_render(plan, work, model, runs[0]["run_config"], env)
        save()


def measure_scaling(config: BenchConfig, plan: Plan, folders: RunFolders, env: Dict[str, str]) -> Dict[str, Any]:
    """The edit of --scaling-variant on each device count of the plan, the same views per edit in every run, and the
    ratios of each count's numbers to the smallest count's; a count the run's options cannot be shared out on (rays
    that do not split into whole patches) is skipped, with why."""
    variant = config.scaling_variant
    edit_count = edit_count_for(METHODS[variant].config.pipeline.edit_count, list(plan.num_devices))
    scaling: Dict[str, Any] = {"variant": variant, "edit_count": edit_count, "by_devices": {}, "ratio": {},
                               "skipped": {}}  # fmt: skip
    for count in plan.num_devices:
        name = f"{variant}-{count}-devices"
        args = in2n_args(config, folders, name, variant, ["--pipeline.edit-count", str(edit_count)])
        spec = {"device": plan.device, "warm_up_s": plan.warm_up_s, "variant": variant, "devices": count,
                "intervals": plan.intervals, "args": args,
                "rank_0_result": str(folders.work / "logs" / f"{name}.rank0.json")}  # fmt: skip
        problems = launch_problems_on(spec)
        if problems:
            scaling["skipped"][str(count)] = " ".join(problems)
            log(f"{variant} on {count} device(s): not measured. {' '.join(problems)}")
            continue
        log(f"training {variant} on {count} device(s), {edit_count} views per edit")
        scaling["by_devices"][str(count)] = run_worker_process("devices", spec, folders.work, name, env)
    measured = list(scaling["by_devices"])
    for count in measured[1:]:
        scaling["ratio"][count] = ratios(scaling["by_devices"][count], scaling["by_devices"][measured[0]])
    return scaling


def measure_render(plan: Plan, work: Path, model: Path, run_config: str, env: Dict[str, str]) -> Dict[str, Any]:
    """ns-render on an in2n run, as it is (no diffusion model) and with the model loaded first, as the original did."""
    render_args = ["dataset", "--load-config", run_config, "--split", "test", "--rendered-output-names", "rgb",
                   "--image-format", "png"]  # fmt: skip
    log("ns-render, ours")
    ours = run_measured(
        [*nerfstudio_command("render"), *render_args, "--output-path", work / "renders" / "ours"],
        work / "logs" / "render-ours.log",
        env,
    )
    log("ns-render, reference (diffusion model loaded)")
    spec = {"device": plan.device, "model": str(model),
            "args": [*render_args, "--output-path", str(work / "renders" / "reference")]}  # fmt: skip
    reference = run_worker_process("render-reference", spec, work, "render-reference", env)
    render = {"ours": {"ip2p_load_s": 0.0, **ours}, "reference": reference}
    render["ratio"] = ratios(render["ours"], render["reference"])
    return render


CONVERGENCE_PASSES = 10
"""The longest edit a convergence run may take, in passes over the views: twice the default --pipeline.min-passes, so
that an edit whose trend flattens after a few passes stops well before."""


def measure_convergence(
    config: BenchConfig, plan: Plan, folders: RunFolders, variant: str, env: Dict[str, str]
) -> Dict[str, Any]:
    """A whole edit with the method's own schedule and the negative editor (which edits in no time: what is measured
    is the scene absorbing the edit, the renders for the edits and the training), until the convergence criterion
    stops it or CONVERGENCE_PASSES passes ran: wall time, steps, edits, peak memory."""
    setup = training_setup(plan.device)
    pipeline = METHODS[variant].config.pipeline
    views = math.ceil(setup.scene.num_views * 0.9)  # nerfstudio-data's default training split
    steps_per_pass = pipeline.pass_every if pipeline.edit_schedule == "passes" else views * pipeline.edit_rate
    limit = CONVERGENCE_PASSES * steps_per_pass
    name = f"{variant}-converge"
    command = [
        *nerfstudio_command("train"), variant, *setup.trainer_args, *model_args(variant, setup), "--vis",
        "tensorboard", "--load-dir", folders.base_of(variant), "--output-dir", folders.work / "runs",
        "--experiment-name", "scene", "--timestamp", name, "--pipeline.editor", "negative",
        "--pipeline.stop-when-converged", "True", "--max-num-iterations", limit, "--steps-per-save", limit,
        "--steps-per-eval-image", limit, *config.train_args, "nerfstudio-data", "--data", folders.scene,
    ]  # fmt: skip
    usage = run_measured(command, folders.work / "logs" / f"{name}.log", env)
    models = folders.work / "runs" / "scene" / variant / name / "nerfstudio_models"
    found = checkpoints_in(models)
    state = load_checkpoint_file(found[max(found)])
    start = load_checkpoint_file(max(checkpoints_in(folders.base_of(variant)).values()))
    edit = state["in2n"]
    return {
        **usage,
        "converged": edit.get("stopped_at_length") is not None,
        "steps": int(state["step"]) - int(start["step"]),
        "step_limit": limit,
        "edits": int(edit["schedule"]["views_edited"]),
        "passes": int(edit["schedule"]["passes_completed"]),
        "views_per_call": int(pipeline.edit_count),
    }
