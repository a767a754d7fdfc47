"""The SDXL InstructPix2Pix editor on a tiny random model: agreement with diffusers' own SDXL pipeline, its size
conditioning, and the parts it shares with the SD editor (prompt cache, batching)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionXLInstructPix2PixPipeline

from in2n.editors.base import EditSettings, view_generator
from in2n.editors.ddim import ddim_schedule
from in2n.editors.factory import EditorConfig, build_editor
from in2n.editors.sdxl import SdxlInstructPix2PixEditor
from tests.helpers import random_images as images

SETTINGS = EditSettings(diffusion_steps=4)


@pytest.fixture(scope="module")
def editor(tiny_sdxl_ip2p: Path) -> SdxlInstructPix2PixEditor:
    return SdxlInstructPix2PixEditor(str(tiny_sdxl_ip2p), torch.device("cpu"))


@pytest.fixture(scope="module")
def encoded_unconditional(tiny_sdxl_ip2p: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SDXL model saved to encode the empty prompt as its unconditional input, rather than use zeros."""
    folder = tmp_path_factory.mktemp("models") / "tiny-sdxl-encoded-unconditional"
    shutil.copytree(tiny_sdxl_ip2p, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["force_zeros_for_empty_prompt"] = False
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def diffusers_edit(model: Path, prompt: str, originals: torch.Tensor, noisy: torch.Tensor, steps: int):
    """diffusers' StableDiffusionXLInstructPix2PixPipeline with DDIM ("leading" spacing, as ours) from `noisy`, the
    prompt applied to every image."""
    pipe = StableDiffusionXLInstructPix2PixPipeline.from_pretrained(str(model), add_watermarker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    pipe.set_progress_bar_config(disable=True)
    height, width = originals.shape[-2:]
    edited = pipe(
        prompt,
        num_images_per_prompt=len(originals),
        image=originals,
        height=height,
        width=width,
        num_inference_steps=steps,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        latents=noisy.clone(),
        output_type="pt",
    ).images
    return edited, tuple(pipe.scheduler.timesteps.tolist())


def our_edit(editor: SdxlInstructPix2PixEditor, prompt: str, originals, renders, seeds, steps: int):
    """Our denoising of the renders from the noise of the seeds, over the full schedule diffusers runs."""
    settings = EditSettings(guidance_scale=7.5, image_guidance_scale=1.5, diffusion_steps=steps)
    generators = [view_generator(seed) for seed in seeds]
    latents = editor.encode_renders(renders, generators)
    noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
    schedule = ddim_schedule(1000, steps, steps_offset=editor.sampler.steps_offset)
    noisy = editor.sampler.add_noise(latents, noise, torch.tensor([schedule.timesteps[0]] * len(seeds)))
    condition = editor.encode_conditions(originals, list(range(100, 100 + len(seeds))))
    embeddings = editor.prompt_embeddings(prompt)
    edited = editor.decode(editor.denoise(noisy, condition, embeddings, [schedule] * len(seeds), settings))
    return edited, noisy, schedule


@pytest.mark.parametrize("zeros", [True, False], ids=["zero-unconditional", "encoded-unconditional"])
def test_denoising_one_view_matches_diffusers_sdxl_pipeline(
    tiny_sdxl_ip2p: Path, encoded_unconditional: Path, zeros: bool
) -> None:
    """From the same noised latents, our DDIM loop and diffusers' SDXL pipeline (with DDIM) give the same image."""
    model = tiny_sdxl_ip2p if zeros else encoded_unconditional
    editor = SdxlInstructPix2PixEditor(str(model), torch.device("cpu"))
    assert editor.zero_unconditional == zeros
    steps, prompt = 5, "turn it into a statue"
    originals, renders = images(1, 7, 32, 48), images(1, 8, 32, 48)
    ours, noisy, schedule = our_edit(editor, prompt, originals, renders, [3], steps)
    theirs, timesteps = diffusers_edit(model, prompt, originals, noisy, steps)
    assert timesteps == schedule.timesteps
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_denoising_a_batch_matches_diffusers_sdxl_pipeline(tiny_sdxl_ip2p: Path, editor: SdxlInstructPix2PixEditor):
    steps, prompt = 4, "make it autumn"
    originals, renders = images(3, 9, 32, 32), images(3, 10, 32, 32)
    ours, noisy, _ = our_edit(editor, prompt, originals, renders, [4, 5, 6], steps)
    theirs, _ = diffusers_edit(tiny_sdxl_ip2p, prompt, originals, noisy, steps)
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_the_size_conditioning_is_the_edit_size(editor: SdxlInstructPix2PixEditor) -> None:
    """SDXL's time ids are (original size, crop top-left, target size): the edit size, uncropped, for every row."""
    seen = []
    hook = editor.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]), with_kwargs=True
    )
    try:
        editor.max_edit_size = 40
        editor.edit(images(2, 0, 48, 64), images(2, 1, 48, 64), [0, 1], "snow", SETTINGS, [1, 2])
    finally:
        hook.remove()
        editor.max_edit_size = editor.family.native_size
    assert seen, "the UNet was called"
    time_ids, text_embeds = seen[0]["time_ids"], seen[0]["text_embeds"]
    # 64x48 views at --pipeline.max-edit-size 40 are edited at 40x30, rounded to the VAE's multiple of 2: 40x30.
    assert time_ids.tolist() == [[30.0, 40.0, 0.0, 0.0, 30.0, 40.0]] * 6
    pooled = editor.prompt_embeddings("snow").pooled
    assert torch.equal(text_embeds[:2], pooled[0:1].expand(2, -1)) and torch.equal(text_embeds[2:], torch.zeros(4, 32))


def test_batched_edits_with_different_schedules_equal_one_at_a_time(editor: SdxlInstructPix2PixEditor) -> None:
    settings = EditSettings(diffusion_steps=8, scale_steps_with_noise=True)
    renders, originals = images(3, 4), images(3, 5)
    seeds = [21, 22, 23]
    lengths = [len(s) for s in editor.schedules([view_generator(s) for s in seeds], settings)]
    assert len(set(lengths)) > 1 and lengths != sorted(lengths, reverse=True), "views run in a different order"
    batched = editor.edit(renders, originals, [0, 1, 2], "snow", settings, seeds)
    single = torch.cat(
        [editor.edit(renders[i : i + 1], originals[i : i + 1], [i], "snow", settings, [seeds[i]]) for i in range(3)]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_prompt_is_encoded_once_per_prompt_by_both_encoders(editor: SdxlInstructPix2PixEditor) -> None:
    calls = []
    hooks = [
        encoder.register_forward_hook(lambda module, args, output, name=name: calls.append(name))
        for name, encoder in (("first", editor.text_encoder), ("second", editor.text_encoder_2))
    ]
    try:
        for _ in range(3):
            first = editor.prompt_embeddings("a prompt never seen before")
        editor.prompt_embeddings("another prompt")
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == ["first", "second", "first", "second"]
    assert first.hidden.shape == (2, 77, 64) and first.pooled.shape == (2, 32)


def test_build_editor_picks_the_sdxl_editor_at_its_native_size(tiny_sdxl_ip2p: Path) -> None:
    editor = build_editor(EditorConfig(ip2p_model=str(tiny_sdxl_ip2p)), "cpu")
    assert isinstance(editor, SdxlInstructPix2PixEditor)
    assert editor.max_edit_size == 768
    assert editor.describe() == f"SDXL InstructPix2Pix {tiny_sdxl_ip2p} (fp32 on cpu)"
    assert build_editor(EditorConfig(ip2p_model=str(tiny_sdxl_ip2p), max_edit_size=256), "cpu").max_edit_size == 256


def test_the_vae_runs_in_fp32_where_an_fp16_sdxl_vae_asks_for_it(editor: SdxlInstructPix2PixEditor) -> None:
    """fp16 is CPU-less, so the rule is checked on the configs: fp32 for an fp16 editor whose VAE has force_upcast."""
    assert editor.vae.config.force_upcast and editor.vae_dtype == torch.float32
    fp32, half = editor.dtype, torch.float16
    try:
        editor.dtype = half
        assert editor.vae_needs_fp32(editor.vae.config)
        assert not editor.vae_needs_fp32(type("Config", (), {"force_upcast": False})())
        editor.dtype = fp32
        assert not editor.vae_needs_fp32(editor.vae.config)
    finally:
        editor.dtype = fp32
