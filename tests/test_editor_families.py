"""Which editor a model is comes from its UNet's config, not from the class model_index.json names; anything that is
not an instruction editor stops with one message naming what it is and which models work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Iterable, Optional

import pytest
import torch

from in2n.editors.base import EditSettings
from in2n.editors.factory import EditorConfig, build_editor
from in2n.editors.families import SD_INSTRUCT_PIX2PIX, SDXL_INSTRUCT_PIX2PIX, family_of
from in2n.editors.ip2p import InstructPix2PixEditor
from in2n.errors import In2nError
from tests.helpers import random_images

EDITORS = (
    "timbrooks/instruct-pix2pix",
    "vinesmsuic/magicbrush-jul7",
    "UCSC-VLAA/HQ-Edit",
    "diffusers/sdxl-instructpix2pix-768",
)
SDXL_INDEX = {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}
SDXL_UNET = {"in_channels": 8, "addition_embed_type": "text_time"}


def edited_copy(model: Path, folder: Path, index: Optional[dict] = None, unet: Optional[dict] = None) -> Path:
    """A copy of a saved model with entries of its model_index.json and unet/config.json replaced."""
    shutil.copytree(model, folder)
    for name, changes in (("model_index.json", index), ("unet/config.json", unet)):
        path = folder / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **(changes or {})}))
    return folder


@pytest.mark.parametrize(
    ("unet", "index", "family"),
    [
        ({"in_channels": 8}, {}, SD_INSTRUCT_PIX2PIX),
        ({"in_channels": 8, "addition_embed_type": None}, {"text_encoder_2": [None, None]}, SD_INSTRUCT_PIX2PIX),
        (SDXL_UNET, SDXL_INDEX, SDXL_INSTRUCT_PIX2PIX),
    ],
)
def test_instruction_editors_are_told_apart_by_their_unet(unet: dict, index: dict, family) -> None:
    assert family_of(unet, index) == (family, "")


@pytest.mark.parametrize(
    ("unet", "index", "what"),
    [
        ({"in_channels": 4}, {}, "a text-to-image Stable Diffusion (its UNet takes 4 input channels"),
        ({"in_channels": 4, "addition_embed_type": "text_time"}, SDXL_INDEX, "a text-to-image Stable Diffusion XL"),
        ({"in_channels": 9}, {}, "an inpainting Stable Diffusion"),
        (SDXL_UNET, {}, "an SDXL-style editor without a second text encoder"),
        ({**SDXL_UNET, "addition_embed_type": "image"}, {}, "an editor whose UNet takes 'image' extra conditioning"),
    ],
)
def test_other_models_are_named_for_what_they_are(unet: dict, index: dict, what: str) -> None:
    family, instead = family_of(unet, index)
    assert family is None and instead.startswith(what)


def test_an_ip2p_saved_as_a_text_to_image_pipeline_loads_as_instructpix2pix(tiny_ip2p: Path, tmp_path: Path) -> None:
    """MagicBrush's model_index.json names StableDiffusionPipeline; its 8-channel UNet makes it an InstructPix2Pix."""
    renamed = edited_copy(tiny_ip2p, tmp_path / "magicbrush-like", index={"_class_name": "StableDiffusionPipeline"})
    editor = build_editor(EditorConfig(ip2p_model=str(renamed)), "cpu")
    assert isinstance(editor, InstructPix2PixEditor) and editor.max_edit_size == 512
    original = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))
    renders, originals = random_images(1, 0), random_images(1, 1)
    settings = EditSettings(diffusion_steps=3)
    assert torch.equal(
        editor.edit(renders, originals, [0], "make it red", settings, [4]),
        original.edit(renders, originals, [0], "make it red", settings, [4]),
    )


def test_a_text_to_image_folder_stops_before_any_weight_loads(tiny_ip2p: Path, tmp_path: Path) -> None:
    """The UNet's config says 4 input channels (its weights, never read, say 8): one message, what works instead."""
    text_to_image = edited_copy(
        tiny_ip2p, tmp_path / "sd", index={"_class_name": "StableDiffusionPipeline"}, unet={"in_channels": 4}
    )
    with pytest.raises(In2nError) as caught:
        build_editor(EditorConfig(ip2p_model=str(text_to_image)), "cpu")
    message = str(caught.value)
    assert message.startswith(f"--pipeline.ip2p-model {text_to_image}: a text-to-image Stable Diffusion (its UNet")
    assert "not an instruction editor" in message
    assert all(hub_id in message for hub_id in EDITORS)


def test_a_folder_without_a_unet_is_named(tiny_ip2p: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-unet"
    shutil.copytree(tiny_ip2p, folder, ignore=shutil.ignore_patterns("unet"))
    with pytest.raises(In2nError, match="no unet/config.json, so it is not a diffusers pipeline with a UNet"):
        build_editor(EditorConfig(ip2p_model=str(folder)), "cpu")


def put_in_hub_cache(hub_cache: Path, repo_id: str, model: Path, only: Iterable[str] = ()) -> None:
    """`model`'s files as huggingface_hub caches a download of `repo_id` (all of them, or the `only` ones)."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    if only:
        for name in only:
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(model / name, snapshot / name)
    else:
        shutil.copytree(model, snapshot)


@pytest.mark.e2e
def test_hub_ids_are_read_through_the_hugging_face_cache(tiny_ip2p: Path, tiny_sdxl_ip2p: Path, tmp_path: Path) -> None:
    """Offline, a hub id in the cache loads as its family; one whose configs say text-to-image stops with the clear
    message although only its two small config files are in the cache (no weights are needed to tell)."""
    hf_home = tmp_path / "hf"
    put_in_hub_cache(hf_home / "hub", "someone/tiny-sdxl-edit", tiny_sdxl_ip2p)
    text_to_image = edited_copy(tiny_ip2p, tmp_path / "sd", unet={"in_channels": 4})
    put_in_hub_cache(hf_home / "hub", "someone/tiny-sd", text_to_image, only=["model_index.json", "unet/config.json"])
    script = textwrap.dedent(
        """
        from in2n.editors.factory import EditorConfig, build_editor
        from in2n.errors import In2nError

        print(build_editor(EditorConfig(ip2p_model="someone/tiny-sdxl-edit"), "cpu").describe())
        try:
            build_editor(EditorConfig(ip2p_model="someone/tiny-sd"), "cpu")
        except In2nError as error:
            print(error)
        """
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "SDXL InstructPix2Pix someone/tiny-sdxl-edit (fp32 on cpu)", result.stdout + result.stderr
    assert lines[1].startswith("--pipeline.ip2p-model someone/tiny-sd: a text-to-image Stable Diffusion")
