"""A training run's folder as nerfstudio writes it: config.yml, nerfstudio_models/step-*.ckpt, and the rest.

The one reader of run folders, used by the trainer (which run wrote the checkpoint it loads) and by the tools that
work on finished runs (in2n-compare, in2n-export, in2n-plot). It reads files only; it never builds a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import yaml
from nerfstudio.engine.trainer import TrainerConfig

from in2n.errors import In2nError
from in2n.runs.checkpoints import checkpoints_in

CONFIG_NAME = "config.yml"


@dataclass
class RunFolder:
    """A run's config.yml, read, and what lies beside it."""

    config_file: Path
    """The run's config.yml."""
    config: TrainerConfig
    """Its contents."""

    @property
    def folder(self) -> Path:
        return self.config_file.parent

    @property
    def models_dir(self) -> Path:
        """Where the run writes its checkpoints (nerfstudio_models, unless the config says otherwise)."""
        return self.folder / self.config.relative_model_dir

    def checkpoints(self) -> Dict[int, Path]:
        """Its complete checkpoints by step (none if the folder is missing)."""
        return checkpoints_in(self.models_dir) if self.models_dir.is_dir() else {}

    def newest_checkpoint(self) -> Optional[Path]:
        found = self.checkpoints()
        return found[max(found)] if found else None

    def require_checkpoint(self, option: str, purpose: str) -> Path:
        """The newest checkpoint, or an error saying the run has saved none yet."""
        newest = self.newest_checkpoint()
        if newest is None:
            raise In2nError(
                f"{option} {self.config_file}: {self.models_dir} holds no checkpoint, so there is nothing to "
                f"{purpose}. Let the run save one (it saves every --steps-per-save steps and when it finishes)."
            )
        return newest

    @property
    def is_edit(self) -> bool:
        """Whether the run is an in2n edit: its pipeline is one of the plugin's (its class is defined in in2n)."""
        return type(self.config.pipeline).__module__.split(".")[0] == "in2n"


def read_run_folder(path: Path, option: str) -> RunFolder:
    """The run a command-line option names: its config.yml, or the run folder holding it. Errors name the option."""
    config_file = path / CONFIG_NAME if path.is_dir() and (path / CONFIG_NAME).is_file() else path
    if not config_file.is_file():
        raise In2nError(
            f"{option} {path} does not exist. Pass the config.yml in the run's folder, e.g. "
            "outputs/<scene>/in2n/<timestamp>/config.yml, or the folder itself."
        )
    try:
        config = yaml.load(config_file.read_text(), Loader=yaml.Loader)
    except Exception as error:  # a damaged or foreign file fails anywhere inside the YAML loader
        details = (str(error).strip().splitlines() or [""])[0]
        raise In2nError(
            f"{option} {config_file} could not be read as a run's config.yml ({type(error).__name__}: {details}). "
            "Pass the config.yml that ns-train wrote into the run's folder."
        ) from None
    if not isinstance(config, TrainerConfig):
        raise In2nError(f"{option} {config_file} is not the config.yml that ns-train writes into a run's folder.")
    return RunFolder(config_file, config)


def run_of_checkpoint(checkpoint: Path) -> Optional[RunFolder]:
    """The run a checkpoint file belongs to (its folder's parent holds config.yml), if it is there and readable."""
    try:
        return read_run_folder(checkpoint.parent.parent, "checkpoint")
    except In2nError:  # an unreadable config only costs the caller a more specific hint
        return None
