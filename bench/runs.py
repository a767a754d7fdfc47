"""The measurements that run ns-train and ns-render, each in a process of its own: training steps per variant and
mode, training over whole edit intervals with edits beside training or stopping it, and ns-render on the run written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List

from bench.config import BenchConfig, Plan
from bench.profiling import ratios
from bench.progress import log
from bench.training import NERFACTO_STEPS, training_setup
from bench.workers import nerfstudio_command, run_measured, run_worker_process
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


def in2n_args(config: BenchConfig, folders: RunFolders, name: str) -> List[str]:
    """ns-train options of an in2n training measurement named `name`, ending with the user's --train-args."""
    return ["--pipeline.datamanager.data", str(folders.scene), "--load-dir", str(folders.load_dir),
            "--pipeline.ip2p-model", str(folders.model), "--pipeline.prompt", config.prompt,
            "--pipeline.diffusion-steps", str(config.steps), "--output-dir", str(folders.work / "runs"),
            "--experiment-name", "scene", "--timestamp", name, *config.train_args]  # fmt: skip


def train_nerfacto(plan: Plan, work: Path, model: Path, env: Dict[str, str]) -> RunFolders:
    """Generate the device's scene and train nerfacto on it for a few steps; the folders of the in2n runs."""
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
    return RunFolders(work, scene, work / "runs" / "scene" / "nerfacto" / "nerfacto" / "nerfstudio_models", model)


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
    for variant in config.variants:
        training[variant] = {}
        modes = [*plan.training_modes, *(["compiled"] if variant in plan.compiled_variants else [])]
        for mode in modes:
            log(f"training {variant}, {mode}")
            # The compiled mode's option comes last, after any --train-args, so that the measurement is what it says.
            args = [*in2n_args(config, folders, f"{variant}-{mode}"),
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
            args = [*in2n_args(config, folders, f"{variant}-concurrent-{concurrent}"),
                    "--pipeline.concurrent-edits", concurrent]  # fmt: skip
            spec = {**common, "variant": variant, "intervals": plan.concurrency_intervals, "args": args}
            concurrency[mode] = run_worker_process("train-interval", spec, work, f"concurrent-{concurrent}", env)
        concurrency["ratio"] = ratios(concurrency["ours"], concurrency["reference"])
        concurrency["variant"] = variant
        results["concurrency"] = concurrency
        save()

    runs = [modes["ours"] for modes in training.values() if "ours" in modes] + (
        [concurrency["ours"]] if concurrency else []
    )
    if plan.measure_render and runs:
        results["render"] = measure_render(plan, work, model, runs[0]["run_config"], env)
        save()


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
