"""Load InstructPix2Pix from the Hugging Face hub or a local folder, with a clear message when it can't be had."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from in2n.errors import In2nError

if TYPE_CHECKING:
    from diffusers import StableDiffusionInstructPix2PixPipeline

DEFAULT_IP2P_MODEL = "timbrooks/instruct-pix2pix"


def looks_like_path(model: str) -> bool:
    """Hub ids are `org/name`; anything else with a slash, or starting like a path, is meant as a folder."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def missing_weights_message(model: str, cause: BaseException) -> str:
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return (
        f"Could not load the InstructPix2Pix weights {model!r} ({reason}). "
        f"They are looked up in the Hugging Face cache (HF_HOME={hf_home}"
        + (", HF_HUB_OFFLINE=1 so nothing is downloaded" if offline else "")
        + "). To fix it: on a machine with internet run `hf download "
        + f"{model}` (or `huggingface-cli download {model}`) once, and set HF_HUB_OFFLINE=1 where there is none; "
        "or pass a folder saved with `StableDiffusionInstructPix2PixPipeline.save_pretrained(...)` as "
        "--pipeline.ip2p-model /path/to/folder."
    )


def load_ip2p_pipeline(model: str, dtype: torch.dtype) -> StableDiffusionInstructPix2PixPipeline:
    """The diffusers pipeline for a hub id or a local folder, without the safety checker."""
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from diffusers.utils import logging as diffusers_logging

    folder = Path(model).expanduser()
    if folder.exists():
        if not (folder / "model_index.json").is_file():
            raise In2nError(
                f"--pipeline.ip2p-model {model}: this folder holds no model_index.json, so it is not a diffusers "
                "pipeline. Point it at a folder written by `StableDiffusionInstructPix2PixPipeline.save_pretrained`, "
                f"or at a hub id such as {DEFAULT_IP2P_MODEL}."
            )
        source = str(folder)
    elif looks_like_path(model):
        raise In2nError(
            f"--pipeline.ip2p-model {model}: no such folder. Check the path, or use a hub id such as "
            f"{DEFAULT_IP2P_MODEL}."
        )
    else:
        source = model
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # the "safety checker disabled" notice is noise for 3D editing
    try:
        return StableDiffusionInstructPix2PixPipeline.from_pretrained(
            source, dtype=dtype, safety_checker=None, requires_safety_checker=False
        )
    except In2nError:
        raise
    except Exception as error:  # hub, network and file errors come in many types; all mean "weights not here"
        raise In2nError(missing_weights_message(model, error)) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
