"""The trainer of in2n: loads the scene to edit, resumes edits, and writes checkpoints atomically."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE

from in2n.checkpoints import (
    atomic_save,
    checkpoints_in,
    find_checkpoint,
    load_checkpoint_file,
    mismatch_message,
    source_run_config,
)
from in2n.errors import In2nError
from in2n.logging import notice
from in2n.pipeline import In2nPipeline


@dataclass
class In2nTrainerConfig(TrainerConfig):
    """nerfstudio's trainer, with `max_num_iterations` counting the steps of the whole edit."""

    _target: Type = field(default_factory=lambda: In2nTrainer)


class In2nTrainer(Trainer):
    """Trainer that starts an edit from a nerfacto checkpoint, or continues one from an in2n checkpoint.

    Steps keep counting from the loaded checkpoint (an edit of a 30000-step nerfacto run shows steps
    30001, 30002, ...). `--max-num-iterations N` is the length of the whole edit: a resumed edit runs only
    the steps it has left, and stops at the same step as an uninterrupted one.
    """

    config: In2nTrainerConfig
    pipeline: In2nPipeline

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        self._checkpoint: Optional[Path] = None
        if test_mode == "val":
            # Before the data and the diffusion model are loaded: a wrong path should fail in a second.
            self._checkpoint = find_checkpoint(self.config.load_dir, self.config.load_step, self.config.load_checkpoint)
        super().setup(test_mode)
        if test_mode == "val":
            # nerfstudio's console shows "% Done" and the ETA against this; steps continue from the checkpoint.
            writer.GLOBAL_BUFFER["max_iter"] = self._start_step + self.config.max_num_iterations

    def _load_checkpoint(self) -> None:
        if self._checkpoint is None:
            return super()._load_checkpoint()
        path = self._checkpoint
        state = load_checkpoint_file(path)
        self._start_step = int(state["step"]) + 1
        self.step = int(state["step"])  # what the final save uses if no step is left to run
        self._check_data_source(path)
        try:
            self.pipeline.load_pipeline(state["pipeline"], state["step"])
        except RuntimeError as error:
            raise In2nError(
                mismatch_message(error, path, self.config.pipeline.model, self.pipeline.datamanager.num_views)
            ) from None
        edit_state: Optional[Dict[str, Any]] = state.get("in2n")
        if edit_state is None:
            self.pipeline.edit_start_step = self._start_step
            self.pipeline.remember_initial_model()
            CONSOLE.print(f"Starting a new edit from {path} (step {state['step']}).")
        else:
            self._resume(state, edit_state, path)
        end = self.pipeline.edit_start_step + self.config.max_num_iterations
        remaining = max(0, end - self._start_step)
        if remaining == 0:
            notice(
                f"this edit already ran its {self.config.max_num_iterations} steps (--max-num-iterations); raise it "
                "to continue editing."
            )
        # The trainer runs `max_num_iterations` steps after the loaded one; make that the steps left.
        self.config = dataclasses.replace(self.config, max_num_iterations=remaining)

    def _resume(self, state: Dict[str, Any], edit_state: Dict[str, Any], path: Path) -> None:
        sizes = [tuple(s) for s in edit_state["image_sizes"]]
        ours = [self.pipeline.datamanager.image_size(v) for v in range(self.pipeline.datamanager.num_views)]
        if sizes != ours:
            raise In2nError(
                f"{path} was edited on images of {sizes[0][1]}x{sizes[0][0]} pixels (width x height), but --data "
                f"gives {ours[0][1]}x{ours[0][0]}. Use the same --data and dataparser options (such as "
                "--downscale-factor) as the run being resumed."
            )
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        self.pipeline.load_edit_state_dict(edit_state)
        prompt = self.pipeline.edit_controls.prompt.value
        if edit_state["prompt"] != prompt:
            notice(f"resuming an edit made with the prompt {edit_state['prompt']!r}; continuing with {prompt!r}")
        schedule = self.pipeline.schedule
        CONSOLE.print(
            f"Resuming the edit from {path} (step {state['step']}): {len(edit_state['edited_views'])} views edited, "
            f"pass {schedule.passes_completed + 1}."
        )

    def _check_data_source(self, path: Path) -> None:
        source = source_run_config(path)
        if source is None:
            return
        datamanager = source.pipeline.datamanager
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
            "pipeline": self.pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        if self.pipeline.schedule is not None:
            state["in2n"] = self.pipeline.edit_state_dict()
        atomic_save(state, path, scratch_dir=self.base_dir)
        if self.config.save_only_latest_checkpoint:
            for old in checkpoints_in(self.checkpoint_dir).values():
                if old != path:
                    old.unlink()
