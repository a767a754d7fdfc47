"""Training measurements: the scene and nerfacto each device trains, and what runs in a training measurement's process
(an in2n trainer set up as ns-train does, its steps timed phase by phase with each phase's peak memory)."""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import tyro
from torch import Tensor, nn

from bench.config import SPLAT_VARIANTS
from bench.devices import warm_up
from bench.memory import PhaseMemory
from bench.profiling import Phases, clock, median
from bench.reference_editor import ReferenceModeEditor
from in2n.dataset_update.background import edits_run_concurrently
from in2n.editors.base import Editor, EditSettings
from in2n.editors.factory import build_editor
from in2n.method_configs import in2n, in2n_big, in2n_lite, in2n_splat, in2n_splat_lite
from in2n.synthetic.cpu_preset import CPU_TRAINER_ARGS, SMALL_MODEL_ARGS, SMALL_SPLAT_ARGS
from in2n.synthetic.scene import SceneConfig
from in2n.trainer import In2nTrainer, In2nTrainerConfig

METHODS = {
    "in2n-big": in2n_big,
    "in2n": in2n,
    "in2n-lite": in2n_lite,
    "in2n-splat": in2n_splat,
    "in2n-splat-lite": in2n_splat_lite,
}
NERFACTO_STEPS = 10
"""Steps of the nerfacto run the in2n runs start from; its quality does not change their speed."""
SPLATFACTO_STEPS = 10
"""Steps of the splatfacto run the splat edits start from: its Gaussians are the scene's point cloud, one per point
(splatfacto densifies from step 500 on), and their number, not their quality, sets the speed."""
EDITED_RUN_STEPS = 30000
"""Timed steps are numbered as in an edit of a nerfacto trained for nerfstudio's default 30000 steps. The number
matters: nerfacto trains its proposal networks at every step below step 10, every other step at step 500 and every
sixth from step 5000 on (its proposal schedule), and a step that trains them costs several times one that does not."""
STEP_PHASES = ("render", "edit")
"""Phases inside a training step with an edit; the rest of the step is NeRF forward/backward and the optimizer."""


@dataclass(frozen=True)
class TrainingSetup:
    """The scene and the nerfacto model the training measurements use on a device."""

    scene: SceneConfig
    """The generated scene nerfacto and the in2n runs train on."""
    model_args: Tuple[str, ...]
    """nerfacto's model options, the same for the nerfacto run and the in2n runs that load it."""
    trainer_args: Tuple[str, ...]
    """Trainer options every run on the device needs."""
    description: str
    """One line for the report."""
    splat_args: Tuple[str, ...] = ()
    """splatfacto's options, the same for the splatfacto run and the splat edits that load it."""
    splatfacto: str = "splatfacto"
    """The method that trains the splats the splat edits start from."""


CPU_SETUP = TrainingSetup(
    scene=SceneConfig(num_views=20, width=64, height=48, seed=0, points=4000),
    model_args=tuple(SMALL_MODEL_ARGS),
    trainer_args=tuple(CPU_TRAINER_ARGS),
    description="CPU preset: small nerfacto (splats: in2n-splatfacto, 4000 Gaussians), 20 generated views of 64x48",
    splat_args=tuple(SMALL_SPLAT_ARGS),
    splatfacto="in2n-splatfacto",
)
"""The small CPU preset, as in the end-to-end tests (splats render through the pure-torch route there)."""
CUDA_SETUP = TrainingSetup(
    # One ray per pixel: the generator runs on the CPU, and anti-aliasing does not change the cost of training.
    scene=SceneConfig(num_views=24, width=512, height=384, seed=0, supersample=1, points=100_000),
    model_args=(),
    trainer_args=("--machine.device-type", "cuda", "--viewer.quit-on-train-completion", "True"),
    description="nerfacto's and splatfacto's default models (splats: 100000 Gaussians from the scene's point "
    "cloud), 24 generated views of 512x384",
)
"""nerfacto's defaults (tiny-cuda-nn when installed, else its pure-torch hash grid) and splatfacto's (gsplat's
kernels), as a user runs them. A splatfacto of a real capture trained 30000 steps holds millions of Gaussians; the
splats' step time grows with their number."""


def training_setup(device: str) -> TrainingSetup:
    return CUDA_SETUP if device.startswith("cuda") else CPU_SETUP


def model_args(method: str, setup: TrainingSetup) -> Tuple[str, ...]:
    """The setup's model options for the method's kind of scene."""
    return setup.splat_args if method in SPLAT_VARIANTS else setup.model_args


def trainer_config(method: str, args: Sequence[str], setup: TrainingSetup) -> In2nTrainerConfig:
    """The method's config with the setup's model and trainer options, and `args` as on the ns-train command line."""
    return tyro.cli(
        tyro.conf.FlagConversionOff[In2nTrainerConfig],
        default=copy.deepcopy(METHODS[method].config),
        args=[*model_args(method, setup), *setup.trainer_args, "--vis", "tensorboard", *args],
    )


class PhaseEditor(Editor):
    """An editor whose every edit is measured as the phase "edit" (of the training step it runs in: edits must run on
    the training thread, as they do by default on one device)."""

    def __init__(self, editor: Editor, phases: Phases) -> None:
        self.editor = editor
        self.phases = phases
        self.name = editor.name
        self.device = editor.device

    def describe(self) -> str:
        return self.editor.describe()

    def edit(
        self,
        renders: Tensor,
        originals: Tensor,
        views: Sequence[int],
        prompt: str,
        settings: EditSettings,
        seeds: Sequence[int],
        noise_levels: Optional[Sequence[int]] = None,
    ) -> Tensor:
        with self.phases.phase("edit"):
            return self.editor.edit(renders, originals, views, prompt, settings, seeds, noise_levels)


def set_up_trainer(
    spec: Dict[str, Any], wrap_editor: Optional[Callable[[Editor], Editor]] = None
) -> Tuple[In2nTrainerConfig, In2nTrainer]:
    """The config and the trainer of a training measurement, set up as ns-train does; the reference mode's editor
    edits the original implementation's way."""
    config = trainer_config(spec["variant"], spec["args"], training_setup(spec["device"]))
    config.save_config()

    def editor_factory(training_device: str) -> Editor:
        editor = build_editor(config.pipeline, training_device)
        if spec.get("mode") == "reference":
            editor = ReferenceModeEditor(editor)  # type: ignore[arg-type]
        return wrap_editor(editor) if wrap_editor is not None else editor

    trainer = config.setup(local_rank=0, world_size=1, editor_factory=editor_factory)
    trainer.setup()
    return config, trainer


def uses_tcnn(model: nn.Module) -> bool:
    """Whether nerfacto's encodings and MLPs run on tiny-cuda-nn (nerfstudio falls back to torch without it)."""
    return any(getattr(module, "tcnn_encoding", None) is not None for module in model.modules())


def training_step(trainer: In2nTrainer, number: int) -> None:
    """The body of nerfstudio's Trainer.train loop for one step: the callbacks around it (nerfacto's proposal schedule
    among them) and the step."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    trainer.pipeline.train()
    for callback in trainer.callbacks:
        callback.run_callback_at_location(number, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(number)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(number, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def train_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Set up an in2n trainer like ns-train and time its training steps with and without an edit, phase by phase:
    the render of the view to edit, the edit, the rest (NeRF forward/backward, optimizer), and nerfstudio's eval
    image; with the peak memory of each phase and of the process."""
    device = spec["device"]
    phases = Phases(device)
    with phases.phase("setup"):
        config, trainer = set_up_trainer(spec, lambda editor: PhaseEditor(editor, phases))
    warm_up(device, spec["warm_up_s"])
    loop = trainer.edit_loop
    if edits_run_concurrently(loop.config.concurrent_edits, loop.editor, str(trainer.pipeline.device)):
        raise RuntimeError(
            "the phases of a training step are measured with edits on the training thread; edits beside training "
            "are measured apart (--concurrency-variant): leave --pipeline.concurrent-edits out of --train-args"
        )
    loop.render = phases.wrap("render", loop.render)

    def step(number: int, phase: str) -> Dict[str, float]:
        """One training step; its seconds and those of its inner phases."""
        calls = {name: len(phases.seconds[name]) for name in STEP_PHASES}
        with phases.phase(phase):
            training_step(trainer, number)
        inner = {name: sum(phases.seconds[name][calls[name] :]) for name in STEP_PHASES}
        total = phases.seconds[phase][-1]
        return {"total": total, **inner, "nerf": total - sum(inner.values())}

    rate = loop.config.edit_rate
    first = EDITED_RUN_STEPS + 1
    if loop.config.edit_schedule == "passes":
        # Passes count from the edit's first step: number it as the first step of an edit of a 30000-step run. A step
        # with an edit is a pass over every view.
        interval, views_per_edit = loop.config.pass_every, loop.images.num_views
        loop.begin(first, loop.length)
        plain_steps = list(range(first + 1, first + spec["steps"] + 2))
        edit_steps = [first + interval * k for k in range(spec["edits"] + 1)]
    else:
        interval, views_per_edit = rate, loop.config.edit_count
        plain_steps = [s for s in range(first, first + (spec["steps"] + 1) * rate) if s % rate][: spec["steps"] + 1]
        edit_steps = [EDITED_RUN_STEPS + rate * k for k in range(1, spec["edits"] + 2)]
    # The first step of each kind pays one-off costs (allocations, first kernels, compiling a compiled editor); it is
    # not counted in the step times, but its memory counts (a run goes through it too).
    plain = [step(s, "train_step") for s in plain_steps]
    edits = [step(s, "edit_step") for s in edit_steps]
    first_plain, first_edit = plain.pop(0), edits.pop(0)
    # nerfstudio renders a whole eval image every steps_per_eval_image steps (the first call is not timed).
    for _ in range(2):
        with phases.phase("eval_image"):
            trainer.pipeline.get_eval_image_metrics_and_images(edit_steps[-1])
    trainer.save_checkpoint(edit_steps[-1])

    # Consecutive steps without an edit differ by whether they train the proposal networks: their mean is the
    # typical step. Steps with an edit are alike: their median.
    step_s = statistics.mean([s["total"] for s in plain])
    edit_step_s = median([s["total"] for s in edits])
    assert edit_step_s is not None
    timed_phases = {
        "setup": phases.seconds["setup"],
        "train_step": [s["total"] for s in plain],
        "edit_step": [s["total"] for s in edits],
        **{name: [s[name] for s in edits] for name in (*STEP_PHASES, "nerf")},
        "eval_image": phases.seconds["eval_image"][1:],
    }
    overall = phases.memory.overall_mb()
    return {
        "setup_s": phases.seconds["setup"][0],
        "step_s": step_s,
        "edit_step_s": edit_step_s,
        "steps_per_s": 1.0 / step_s,
        "steps_per_s_with_editing": interval / ((interval - 1) * step_s + edit_step_s),
        "edit_step_per_view_s": edit_step_s / views_per_edit,
        "edit_rate": rate,
        "edit_interval": interval,
        "views_per_edit_step": views_per_edit,
        "step_times_s": timed_phases["train_step"],
        "edit_step_times_s": timed_phases["edit_step"],
        "first_step_s": first_plain["total"],
        "first_edit_step_s": first_edit["total"],
        "phase_s": {name: median(values) for name, values in timed_phases.items()},
        "phase_memory": phases.memory.report(),
        **peak_fields(overall),
        # Splats have no hash grid: only a NeRF's measurements say whether tiny-cuda-nn ran.
        **({} if spec["variant"] in SPLAT_VARIANTS else {"tcnn": uses_tcnn(trainer.pipeline.model)}),
        "run_config": str(config.get_base_dir() / "config.yml"),
    }


def train_interval_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Set up an in2n trainer like ns-train and time whole edit intervals of nerfstudio's training loop."""
    device = spec["device"]
    memory = PhaseMemory.for_device(device)
    config, trainer = set_up_trainer(spec)
    warm_up(device, spec["warm_up_s"])
    rate = trainer.edit_loop.config.edit_rate

    # Every edit of the timed steps is finished and written at the end (the last one is waited for), so both modes
    # do the same work: intervals x (edit_rate steps + one edit). One-off costs of the first steps count in both.
    timed_steps = rate * spec["intervals"]
    start = clock(device)
    for number in range(EDITED_RUN_STEPS, EDITED_RUN_STEPS + timed_steps):
        training_step(trainer, number)
    trainer.edit_loop.write_finished_edits(EDITED_RUN_STEPS + timed_steps)
    seconds = clock(device) - start
    trainer.pipeline.stop_edits()
    trainer.save_checkpoint(EDITED_RUN_STEPS + timed_steps)
    return {
        "steps_per_s": timed_steps / seconds,
        "interval_s": seconds / spec["intervals"],
        "edit_rate": rate,
        **peak_fields(memory.overall_mb()),
        "run_config": str(config.get_base_dir() / "config.yml"),
    }


PEAK_FIELDS = {"rss": "peak_rss_mb", "allocated": "peak_allocated_mb", "reserved": "peak_reserved_mb"}
"""The results' names of a process's peak of each memory counter."""


def peak_fields(overall: Dict[str, float]) -> Dict[str, float]:
    return {PEAK_FIELDS[name]: value for name, value in overall.items()}
