"""The trainer of in2n: loads the scene to edit, resumes edits, and writes checkpoints atomically."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Type

import yaml
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import comms, writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from in2n.console import notice
from in2n.dataset_update.loop import EditLoop
from in2n.dataset_update.state import EDIT_STATE_KEY, EditState, EditStateError
from in2n.distributed import prepare_launch, single_device_state, world_size_of
from in2n.edit_pipeline import EditPipeline
from in2n.editors.factory import EditorFactory
from in2n.errors import In2nError
from in2n.process import prepare_process
from in2n.runs.checkpoints import atomic_save, checkpoints_in, find_checkpoint, load_checkpoint_file
from in2n.runs.folder import RunFolder, run_of_checkpoint
from in2n.runs.mismatch import flag_value, mismatch_message, nested_field, set_nested_field, source_model_options
from in2n.runs.scene_kind import check_kind, checkpoint_kind, model_kind


@dataclass
class In2nTrainerConfig(TrainerConfig):
    """nerfstudio's trainer, with `max_num_iterations` counting the steps of the whole edit."""

    _target: Type = field(default_factory=lambda: In2nTrainer)

    def save_config(self) -> None:
        """Write the run's config.yml. ns-train writes it before the trainer reads the run being edited; an edit
        resumed in its own run folder would overwrite the model options its weights need (taken from the run it
        started from) with the defaults, so they are carried over from the config.yml being replaced."""
        models = self.load_dir or (self.load_checkpoint.parent if self.load_checkpoint else None)
        base_dir = self.get_base_dir()
        if models is not None and models.resolve() == (base_dir / "nerfstudio_models").resolve():
            previous = run_of_checkpoint(models / "checkpoint")
            if previous is not None:
                model = self.pipeline.model
                for name, value in source_model_options(previous.config.pipeline.model, model).items():
                    set_nested_field(model, name, value)
        # ns-train saves the config just before it launches the run: one on several devices is set up here.
        if world_size_of(self) > 1:
            prepare_launch(self)
        super().save_config()


class In2nTrainer(Trainer):
    """Trainer that starts an edit from a nerfacto or splatfacto checkpoint, or continues one from an in2n checkpoint.

    Steps keep counting from the loaded checkpoint (an edit of a 30000-step nerfacto run shows steps
    30001, 30002, ...). `--max-num-iterations N` is the length of the whole edit: a resumed edit runs only
    the steps it has left, and stops at the same step as an uninterrupted one.

    Args:
        editor_factory: builds the pipeline's editor; default: the one the options ask for.
    """

    config: In2nTrainerConfig
    pipeline: EditPipeline

    def __init__(
        self,
        config: In2nTrainerConfig,
        local_rank: int = 0,
        world_size: int = 1,
        editor_factory: Optional[EditorFactory] = None,
    ) -> None:
        prepare_process()
        super().__init__(config, local_rank, world_size)
        self._editor_factory = editor_factory
        self._edit_length = config.max_num_iterations
        """The whole edit's length, --max-num-iterations (the config's value becomes the steps left to run)."""
        self._stopped_at: Optional[int] = None
        """The step after which a converged edit stopped."""

    @property
    def edit_loop(self) -> EditLoop:
        assert self.pipeline.edit_loop is not None, "only a training pipeline edits"
        return self.pipeline.edit_loop

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        self._checkpoint: Optional[Path] = None
        self._source: Optional[RunFolder] = None
        """The run that wrote the checkpoint, when its config.yml is beside it."""
        if test_mode == "val":
            # Before the data and the diffusion model are loaded: a wrong path should fail in a second.
            self._checkpoint = find_checkpoint(self.config.load_dir, self.config.load_step, self.config.load_checkpoint)
            self._source = run_of_checkpoint(self._checkpoint)
            if self._source is not None:
                self._check_kind(model_kind(self._source.config.pipeline.model), self._checkpoint)
            self._take_model_options_of(self._source)
        pipeline_config = self.config.pipeline
        if self._editor_factory is not None:
            # nerfstudio's Trainer.setup builds the pipeline from its config's `_target`; hand it the factory there.
            target = functools.partial(pipeline_config._target, editor_factory=self._editor_factory)
            self.config.pipeline = dataclasses.replace(pipeline_config, _target=target)
        try:
            super().setup(test_mode)
        finally:
            self.config.pipeline = pipeline_config
        if test_mode == "val":
            # nerfstudio's console shows "% Done" and the ETA against this; steps continue from the checkpoint.
            writer.GLOBAL_BUFFER["max_iter"] = self._start_step + self.config.max_num_iterations

    def _take_model_options_of(self, source: Optional[RunFolder]) -> None:
        """Run the checkpoint's weights as its run did (mismatch.MODEL_FIELDS_FROM_SOURCE), and say so in this run's
        config.yml, which ns-render and ns-viewer build the model from."""
        if source is None:
            return
        model = self.config.pipeline.model
        options = source_model_options(source.config.pipeline.model, model)
        for name, value in options.items():
            notice(
                f"the run being edited was trained with --pipeline.model.{name.replace('_', '-')} {flag_value(value)} "
                f"(in2n's default: {flag_value(nested_field(model, name))}); using {flag_value(value)}, which its "
                "weights need"
            )
            set_nested_field(model, name, value)
        config_file = self.base_dir / "config.yml"
        if options and config_file.exists() and comms.is_main_process():  # ns-train wrote it before the trainer
            config_file.write_text(yaml.dump(self.config), "utf8")

    def _load_checkpoint(self) -> None:
        if self._checkpoint is None:
            return super()._load_checkpoint()
        path = self._checkpoint
        state = load_checkpoint_file(path)
        self._start_step = int(state["step"]) + 1
        self.step = int(state["step"])  # what the final save uses if no step is left to run
        self._check_kind(checkpoint_kind(state["pipeline"]), path)
        self._check_data_source()
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
        except RuntimeError as error:
            raise In2nError(
                mismatch_message(error, path, self.config.pipeline.model, self.pipeline.datamanager.num_views)
            ) from None
        self._rebuild_optimizers()
        try:
            edit_state = EditState.of_checkpoint(state)
        except EditStateError as error:
            raise In2nError(f"{path}: {error}") from None
        loop = self.edit_loop
        if edit_state is None:
            loop.begin(self._start_step, self._edit_length)
            CONSOLE.print(f"Starting a new edit from {path} (step {state['step']}).")
        else:
            self._resume(state, edit_state, path)
        steps_left = loop.steps_left(self._start_step)
        if steps_left == 0:
            if loop.stopped:
                notice(
                    f"this edit converged and stopped at step {self._start_step - 1} ({path}); raise "
                    f"--max-num-iterations above {loop.stopped_at_length} to edit further. Nothing was written."
                )
            else:
                notice(
                    f"this edit already ran its {self._edit_length} steps (--max-num-iterations); raise it to "
                    "continue editing. Nothing was written."
                )
        self.config = dataclasses.replace(self.config, max_num_iterations=steps_left)
        if comms.is_main_process():
            loop.log_progress_to(self.base_dir)

    def _check_kind(self, found, checkpoint: Path) -> None:
        check_kind(self.config.method_name or "in2n", model_kind(self.config.pipeline.model), found, checkpoint)

    def _rebuild_optimizers(self) -> None:
        """Optimizers on the parameters the model holds after loading, before any state is loaded into them.

        nerfstudio's Trainer.setup builds the optimizers before it loads the checkpoint. nerfacto loads its weights
        into the parameters those optimizers hold; splatfacto replaces every Gaussian parameter with a new one of the
        checkpoint's size, which the old optimizers never see: the Gaussians would silently stop training (the failure
        of Instruct-GS2GS on nerfstudio newer than 1.0.3). The training callbacks, which hand the optimizers to
        splatfacto's densification, are made after this.
        """
        self.optimizers = self.setup_optimizers()
        self.pipeline.after_load()

    def train(self) -> None:
        """nerfstudio's training loop; an edit with no step left to run (finished or converged) writes nothing."""
        if self.pipeline.edit_loop is not None and self.config.max_num_iterations == 0:
            self._discard_new_run_folder()
            return
        super().train()

    @check_main_thread
    def _discard_new_run_folder(self) -> None:
        """Remove the folder ns-train made for this run, if it holds nothing but what this process wrote into it:
        its config.yml, the progress log and empty logger files. An existing run's folder is left alone."""
        folder = self.base_dir
        if self._checkpoint is not None and folder.resolve() == self._checkpoint.parent.parent.resolve():
            return
        written_here = {"config.yml", "edit_progress.csv"}
        files = [p for p in folder.rglob("*") if p.is_file()]
        if all(p.name in written_here or p.name.startswith("events.out.tfevents") for p in files):
            shutil.rmtree(folder, ignore_errors=True)

    def train_iteration(self, step: int):
        outputs = super().train_iteration(step)
        loop = self.pipeline.edit_loop
        converged = None if loop is None else loop.stop_if_converged()
        if converged is not None:
            assert loop is not None
            self._stopped_at = step
            self.stop_training = True  # nerfstudio's loop ends before the next step, then saves (_after_train)
            notice(
                f"the edit converged at step {step}: over its last {loop.config.min_passes} full passes the agreement "
                f"changed by {converged.trend:+.2f} dB per pass (now {converged.pass_psnr:.2f} dB), within "
                f"--pipeline.converge-tolerance {loop.config.converge_tolerance:g}. Stopping after this step and "
                f"saving; raise --max-num-iterations above {self._edit_length} to edit further."
            )
        return outputs

    def _after_train(self) -> None:
        if self._stopped_at is not None:
            self.step = self._stopped_at  # the loop set the step after it before stopping
        super()._after_train()

    def _resume(self, state: Dict[str, Any], edit_state: EditState, path: Path) -> None:
        images = self.pipeline.datamanager.training_images
        ours = [images.image_size(v) for v in range(images.num_views)]
        if edit_state.image_sizes != ours:
            theirs = edit_state.image_sizes[0]
            raise In2nError(
                f"{path} was edited on images of {theirs[1]}x{theirs[0]} pixels (width x height), but --data "
                f"gives {ours[0][1]}x{ours[0][0]}. Use the same --data and dataparser options (such as "
                "--downscale-factor) as the run being resumed."
            )
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        loop = self.edit_loop
        loop.resume(edit_state, self._edit_length)
        if edit_state.prompt != loop.live.prompt:
            notice(f"resuming an edit made with the prompt {edit_state.prompt!r}; continuing with {loop.live.prompt!r}")
        summary = loop.summary()
        CONSOLE.print(
            f"Resuming the edit from {path} (step {state['step']}): {summary.views_changed} views edited, "
            f"pass {summary.passes_completed + 1}."
        )

    def _check_data_source(self) -> None:
        source = self._source
        if source is None:
            return
        datamanager = source.config.pipeline.datamanager
        theirs = datamanager.data or datamanager.dataparser.data
        ours = Path(self.pipeline.datamanager.get_datapath())
        if theirs is not None and Path(theirs).resolve() != ours.resolve():
            notice(f"the checkpoint's run used --data {theirs}; this run uses {ours}. They must be the same scene.")

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint plus the edit's state, written atomically."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        state: Dict[str, Any] = {
            "step": step,
            "pipeline": single_device_state(self.pipeline.state_dict()),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        if self.pipeline.edit_loop is not None:
            state[EDIT_STATE_KEY] = self.pipeline.edit_loop.edit_state().to_dict()
        atomic_save(state, path, scratch_dir=self.base_dir)
        if self.config.save_only_latest_checkpoint:
            for old in checkpoints_in(self.checkpoint_dir).values():
                if old != path:
                    old.unlink()
