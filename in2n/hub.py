"""Models named by a Hugging Face hub id or a local folder: where they are looked up, and one message for "the
weights are not here" shared by every model the package loads (the instruction editors, CLIP)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

from in2n.errors import In2nError, ValueProblem

Loaded = TypeVar("Loaded")


@dataclass(frozen=True)
class ModelKind:
    """A kind of model an option names, in the words its messages use."""

    title: str
    """What the model is, e.g. "InstructPix2Pix" or "CLIP model"."""
    marker: str
    """A file every saved folder of this kind holds (model_index.json for diffusers pipelines)."""
    saved_with: str
    """How a user saves a folder of this kind, as code."""
    example: str
    """A hub id of this kind, for the messages."""


def looks_like_path(model: str) -> bool:
    """Hub ids are `org/name`; anything else with a slash, or starting like a path, is meant as a folder."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def model_source(model: str, kind: ModelKind) -> str:
    """What `from_pretrained` gets for a model name: a checked local folder, or the hub id as given."""
    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / kind.marker).is_file():
            raise ValueProblem(
                model,
                f"this folder holds no {kind.marker}, so it is not a saved {kind.title}. Point it at a folder written "
                f"by {kind.saved_with}, or at a hub id such as {kind.example}.",
            )
        return str(folder)
    if looks_like_path(model):
        raise ValueProblem(model, f"no such folder. Check the path, or use a hub id such as {kind.example}.")
    return model


def model_file(source: str, filename: str, model: str, kind: ModelKind) -> Optional[Path]:
    """One file of a model, `source` being what `model_source` returned for the model name `model`: read from the
    folder, or for a hub id through the Hugging Face cache (fetched into it if missing; `from_pretrained` reads the same
    cache, so nothing is downloaded twice). None when the model has no such file; a ValueProblem when it cannot be
    had."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        # HF_HUB_OFFLINE as it is now: huggingface_hub reads it once, when first imported.
        return Path(hf_hub_download(source, filename, local_files_only=hub_offline()))
    except RemoteEntryNotFoundError:  # the repository exists and has no such file
        return None
    except Exception as error:  # hub, network and cache errors come in many types; all mean "not here"
        raise missing_weights(model, kind, error) from None


def missing_weights(model: str, kind: ModelKind, cause: BaseException) -> ValueProblem:
    """The weights could not be had: where they were looked for, and the two ways to provide them."""
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    offline = ", HF_HUB_OFFLINE=1 so nothing is downloaded" if hub_offline() else ""
    return ValueProblem(
        model,
        f"could not load the {kind.title} weights ({reason}). They are looked up in the Hugging Face cache "
        f"(HF_HOME={hf_home}{offline}). To fix it: on a machine with internet run `hf download {model}` (or "
        f"`huggingface-cli download {model}`) once, and set HF_HUB_OFFLINE=1 where there is none; or give a folder "
        f"saved with {kind.saved_with} instead.",
    )


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence diffusers' and transformers' notices and progress bars while weights load (a bar per file, and the
    "safety checker disabled" notice, are noise next to training output); errors still raise."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars:
            transformers_logging.enable_progress_bar()


def load_pretrained(load: Callable[[str], Loaded], model: str, kind: ModelKind) -> Loaded:
    """`load(source)` for a hub id or a folder, quietly; any failure to find the weights becomes one ValueProblem."""
    source = model_source(model, kind)
    with quiet_loading():
        try:
            return load(source)
        except In2nError:
            raise
        except Exception as error:  # hub, network and file errors come in many types; all mean "weights not here"
            raise missing_weights(model, kind, error) from None
