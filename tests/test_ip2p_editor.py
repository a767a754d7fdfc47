"""The InstructPix2Pix editor on a tiny random model: shapes, determinism, guidance, and agreement with diffusers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

from in2n.editors.base import EditSettings, view_generator
from in2n.editors.ddim import ddim_schedule
from in2n.editors.ip2p import InstructPix2PixEditor
from in2n.synthetic.scene import SceneConfig, write_scene
from tests.helpers import flat
from tests.helpers import random_images as images
from tests.pipelines import make_pipeline

SETTINGS = EditSettings(diffusion_steps=4)


@pytest.fixture(scope="module")
def editor(tiny_ip2p: Path) -> InstructPix2PixEditor:
    return InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))


def test_edit_returns_images_of_the_input_shape_dtype_and_range(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(2, 0), images(2, 1)
    edited = editor.edit(renders, originals, [0, 1], "make it red", SETTINGS, [11, 12])
    assert edited.shape == renders.shape and edited.dtype == torch.float32
    assert torch.isfinite(edited).all() and edited.min() >= 0.0 and edited.max() <= 1.0
    assert not torch.allclose(edited, renders, atol=1e-2)


def test_edit_is_deterministic_under_a_seed_and_varies_with_it(editor: InstructPix2PixEditor) -> None:
    renders, originals = images(1, 0), images(1, 1)
    first = editor.edit(renders, originals, [0], "make it red", SETTINGS, [5])
    again = editor.edit(renders, originals, [0], "make it red", SETTINGS, [5])
    other = editor.edit(renders, originals, [0], "make it red", SETTINGS, [6])
    assert torch.equal(first, again)
    assert not torch.allclose(first, other, atol=1e-4)


def test_batched_and_cached_edits_equal_one_at_a_time_uncached(tiny_ip2p: Path, editor: InstructPix2PixEditor) -> None:
    renders, originals = images(3, 2), images(3, 3)
    batched = editor.edit(renders, originals, [4, 5, 6], "snow", SETTINGS, [1, 2, 3])
    batched_cached = editor.edit(renders, originals, [4, 5, 6], "snow", SETTINGS, [1, 2, 3])  # latents from cache
    plain = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"), cache_condition_latents=False)
    single = torch.cat(
        [plain.edit(renders[i : i + 1], originals[i : i + 1], [4 + i], "snow", SETTINGS, [1 + i]) for i in range(3)]
    )
    assert plain._condition_latents == {}
    assert len(editor._condition_latents) >= 3
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched_cached, single, atol=1e-5, rtol=1e-4)


def test_noise_scaled_schedules_batch_like_single_edits(editor: InstructPix2PixEditor) -> None:
    settings = EditSettings(diffusion_steps=8, scale_steps_with_noise=True)
    renders, originals = images(3, 4), images(3, 5)
    seeds = [21, 22, 23]
    lengths = {len(s) for s in editor.schedules([view_generator(s) for s in seeds], settings)}
    assert len(lengths) > 1, "the seeds should give schedules of different lengths"
    batched = editor.edit(renders, originals, [0, 1, 2], "snow", settings, seeds)
    single = torch.cat(
        [editor.edit(renders[i : i + 1], originals[i : i + 1], [i], "snow", settings, [seeds[i]]) for i in range(3)]
    )
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_prompt_is_encoded_once_per_prompt(editor: InstructPix2PixEditor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original_forward = editor.text_encoder.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(editor.text_encoder, "forward", counting_forward)
    for _ in range(3):
        editor.prompt_embeddings("a prompt never seen before")
    editor.prompt_embeddings("another prompt")
    assert len(calls) == 2


def test_guidance_combines_the_three_predictions_as_instructpix2pix(editor: InstructPix2PixEditor) -> None:
    """eps = eps_uncond + s_text (eps_text - eps_image) + s_image (eps_image - eps_uncond), with the batch laid out
    as (text + image, image only, neither)."""
    seen = {}

    class FakeUnet(torch.nn.Module):
        dtype = torch.float32

        def forward(self, model_input, t, encoder_hidden_states, return_dict=False):
            seen["input"], seen["hidden"] = model_input, encoder_hidden_states
            n = model_input.shape[0] // 3
            eps = torch.cat([torch.full((n, 4, *model_input.shape[-2:]), v) for v in (1.0, 2.0, 4.0)])
            return (eps,)

    settings = EditSettings(guidance_scale=3.0, image_guidance_scale=0.5, diffusion_steps=1)
    real_unet, editor.unet = editor.unet, FakeUnet()
    captured = {}
    real_step = editor.sampler.step

    def capture_step(eps, t, t_prev, latents):
        captured["eps"] = eps
        return real_step(eps, t, t_prev, latents)

    editor.sampler.step = capture_step
    try:
        latents, condition = torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 4, 4)
        embeddings = editor.prompt_embeddings("x")
        schedule = ddim_schedule(500, 1)
        editor.denoise(latents, condition, embeddings, [schedule], settings)
    finally:
        editor.unet, editor.sampler.step = real_unet, real_step
    # text 1, image 2, uncond 4: 4 + 3 * (1 - 2) + 0.5 * (2 - 4) = 0
    torch.testing.assert_close(captured["eps"], torch.zeros(1, 4, 4, 4))
    conditioning = seen["input"][:, 4:]
    assert torch.equal(conditioning[0], condition[0]) and torch.equal(conditioning[1], condition[0])
    assert torch.equal(conditioning[2], torch.zeros_like(condition[0]))
    assert torch.equal(seen["hidden"][0], embeddings[0]) and torch.equal(seen["hidden"][2], embeddings[1])


def test_denoising_matches_diffusers_instructpix2pix_pipeline(tiny_ip2p: Path, editor: InstructPix2PixEditor) -> None:
    """From the same noised latents, our DDIM loop and diffusers' own pipeline (with DDIM) give the same image."""
    steps, prompt = 5, "turn it into a statue"
    settings = EditSettings(guidance_scale=7.5, image_guidance_scale=1.5, diffusion_steps=steps)
    original = images(1, 7, 32, 32)
    render = images(1, 8, 32, 32)
    generator = view_generator(3)
    latents = editor.encode_renders(render, [generator])
    noise = torch.randn(latents.shape, generator=generator)
    schedule = ddim_schedule(1000, steps, steps_offset=editor.sampler.steps_offset)
    noisy = editor.sampler.add_noise(latents, noise, torch.tensor([schedule.timesteps[0]]))
    condition = editor.encode_conditions(original, [99])
    ours = editor.decode(editor.denoise(noisy, condition, editor.prompt_embeddings(prompt), [schedule], settings))

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(str(tiny_ip2p), safety_checker=None)
    # Our schedule uses DDIM's "leading" spacing (as the original implementation's DDIM config did).
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="leading")
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        prompt,
        image=original,
        num_inference_steps=steps,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        latents=noisy.clone(),
        output_type="pt",
    ).images
    assert tuple(pipe.scheduler.timesteps.tolist()) == schedule.timesteps
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_large_views_are_edited_at_the_maximum_size_and_scaled_back(tiny_ip2p: Path) -> None:
    editor = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"), max_edit_size=64)
    sizes = []
    real_decode = editor.decode
    editor.decode = lambda latents: sizes.append(tuple(latents.shape[-2:])) or real_decode(latents)
    edited = editor.edit(images(1, 0, 96, 128), images(1, 1, 96, 128), [0], "x", SETTINGS, [0])
    assert edited.shape == (1, 3, 96, 128)
    assert sizes == [(48 // editor.vae_scale_factor * 1, 64 // editor.vae_scale_factor)]


def test_a_pipeline_on_views_larger_than_the_edit_size_says_so_once(tiny_ip2p: Path, tmp_path: Path, capsys) -> None:
    write_scene(tmp_path, SceneConfig(num_views=6, width=96, height=72, supersample=1))
    make_pipeline(tmp_path, editor="ip2p", ip2p_model=str(tiny_ip2p), max_edit_size=64)
    out = flat(capsys.readouterr().out)
    assert out.count("are larger than --pipeline.max-edit-size 64 px on the long side") == 1
    assert "views of up to 96x72 px" in out and "(e.g. 64x48)" in out


def test_half_precision_on_the_cpu_runs_in_fp32_and_says_so(tiny_ip2p: Path, capsys) -> None:
    editor = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"), full_precision=False)
    assert editor.dtype == torch.float32 and editor.unet.dtype == torch.float32
    assert "full precision (fp32) on the CPU" in flat(capsys.readouterr().out)
