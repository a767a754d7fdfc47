"""The edit every instruction editor makes: noise the render, denoise it conditioned on the original view and the
prompt. The editors of each family (`ip2p.py`, `sdxl.py`) only say how the prompt conditions their UNet."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from in2n.console import notice_once
from in2n.editors.base import Editor, EditSettings, check_batch, noise_levels, view_generator
from in2n.editors.compiling import CompiledModule
from in2n.editors.ddim import BatchedSchedules, DdimSampler, DdimSchedule, ddim_schedule
from in2n.editors.devices import diffusion_dtype
from in2n.editors.families import EditorFamily
from in2n.editors.loading import load_ip2p_pipeline
from in2n.editors.sizing import edit_size
from in2n.hub import quiet_loading

Embeddings = TypeVar("Embeddings")
"""A family's encoding of the prompt and the empty prompt, as its UNet takes them."""

UnetConditioning = Dict[str, Any]
"""Keyword arguments of a UNet call besides the latents and the timesteps."""


class InstructionEditor(Editor, Generic[Embeddings]):
    """The edit of a view on the components of a diffusers instruction editor: the render is encoded and noised to a
    level drawn from [lower_bound, upper_bound], then denoised with DDIM and three-way classifier-free guidance,
    conditioned on the original view and the prompt: eps = eps_uncond + s_text (eps_text - eps_image)
    + s_image (eps_image - eps_uncond).

    Args:
        model: hub id or local folder of an editor of the class's family.
        device: where the diffusion model runs.
        full_precision: fp32 weights; otherwise fp16 (except on the CPU, where fp32 is used and said so).
        max_edit_size: views whose long side exceeds this are edited at a reduced size and scaled back; None: the
            family's native size.
        cache_condition_latents: encode each original view once and keep its latents for later edits.
        compile_unet: run the UNet through torch.compile (see `in2n.editors.compiling`).
    """

    family: EditorFamily
    """The family of models the editor loads."""

    def __init__(
        self,
        model: str,
        device: torch.device,
        full_precision: bool = True,
        max_edit_size: Optional[int] = None,
        cache_condition_latents: bool = True,
        compile_unet: bool = False,
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = diffusion_dtype(device, full_precision)
        if not full_precision and self.dtype == torch.float32:
            notice_once(
                f"{self.family.title} runs in full precision (fp32) on the CPU: fp16 is slow or unsupported there."
            )
        pipe = load_ip2p_pipeline(model, self.dtype, self.family)
        self.unet = pipe.unet.to(device).eval()
        self.vae_dtype = torch.float32 if self.vae_needs_fp32(pipe.vae.config) else self.dtype
        self.vae = pipe.vae.to(device).eval()
        if self.vae_dtype != self.dtype:
            with quiet_loading():  # diffusers advises against casting after loading; this VAE is meant to run in fp32
                self.vae.to(self.vae_dtype)
        self.take_text_encoders(pipe)
        self.sampler = DdimSampler(dict(pipe.scheduler.config), device)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_scaling = float(self.vae.config.scaling_factor)
        self.max_edit_size = self.family.native_size if max_edit_size is None else max_edit_size
        self.cache_condition_latents = cache_condition_latents
        self.compiled_unet: Optional[CompiledModule] = None
        if compile_unet:
            self.compiled_unet = CompiledModule(
                self.unet, device, f"{self.family.title} UNet", describe_call=self._describe_unet_call
            )
            if device.type == "cuda":
                # Convolutions on tensor cores run fastest in channels_last; the compiled UNet chooses its own layout.
                self.vae.to(memory_format=torch.channels_last)
        self._prompt: Optional[Tuple[str, Embeddings]] = None
        self._condition_latents: Dict[Tuple[int, int, int], Tensor] = {}

    # The family's part: the text encoders, and how the prompt conditions the UNet.

    @abstractmethod
    def take_text_encoders(self, pipe: Any) -> None:
        """Keep the tokenizers and text encoders of the loaded pipeline, on the device."""

    @abstractmethod
    def encode_prompt(self, prompt: str) -> Embeddings:
        """The embeddings of the prompt and of the empty prompt."""

    @abstractmethod
    def unet_conditioning(self, embeddings: Embeddings, views: int, size: Tuple[int, int]) -> UnetConditioning:
        """The UNet's text conditioning for a batch of `views` views edited at `size` (height, width in pixels), rows
        laid out as the guidance needs them: text and image for every view, then image only, then neither."""

    def _describe_unet_call(self, model_input: Tensor, *args: Any, **kwargs: Any) -> str:
        """A UNet call's batch in words: three rows per view (see `denoise`), latents 1/vae_scale_factor of a view."""
        views, (height, width) = model_input.shape[0] // 3, model_input.shape[-2:]
        return f"edits of {views} view(s) at {width * self.vae_scale_factor}x{height * self.vae_scale_factor} px"

    def vae_needs_fp32(self, vae_config: Any) -> bool:
        """Whether the VAE must run in fp32 although the editor runs in fp16 (where it overflows in fp16)."""
        return False

    # The edit, shared by every family.

    def describe(self) -> str:
        precision = "fp32" if self.dtype == torch.float32 else "fp16"
        compiled = ", compiled" if self.compiled_unet is not None else ""
        return f"{self.family.title} {self.model} ({precision} on {self.device}{compiled})"

    @torch.no_grad()
    def prompt_embeddings(self, prompt: str) -> Embeddings:
        """The family's embeddings of [prompt, empty prompt]; encoded once per distinct prompt."""
        if self._prompt is not None and self._prompt[0] == prompt:
            return self._prompt[1]
        embeddings = self.encode_prompt(prompt)
        self._prompt = (prompt, embeddings)
        return embeddings

    def tokens(self, tokenizer: Any, texts: List[str]) -> Tensor:
        """Token ids [len(texts), max length] on the device, padded to the encoder's length as it was trained."""
        max_length = tokenizer.model_max_length
        if len(tokenizer(texts[0]).input_ids) > max_length:
            notice_once(f"The prompt is longer than the text encoder's {max_length} tokens; the rest is ignored.")
        ids = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
        return ids.input_ids.to(self.device)

    @torch.no_grad()
    def encode_conditions(self, originals: Tensor, views: Sequence[int]) -> Tensor:
        """Latents of the original views (the distribution's mode, unscaled, as InstructPix2Pix was trained)."""
        size = tuple(originals.shape[-2:])
        keys = [(view, *size) for view in views]
        missing = [i for i, key in enumerate(keys) if key not in self._condition_latents]
        if missing:
            images = self.vae_input(originals[missing])
            latents = self.vae.encode(images).latent_dist.mode().to(self.dtype)
            if not self.cache_condition_latents:
                return latents
            for i, latent in zip(missing, latents, strict=False):
                self._condition_latents[keys[i]] = latent
        return torch.stack([self._condition_latents[key] for key in keys])

    @torch.no_grad()
    def encode_renders(self, renders: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Scaled latents of the renders, sampled from the VAE posterior with each view's generator."""
        posterior = self.vae.encode(self.vae_input(renders)).latent_dist
        draws = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g) for g in generators])
        latents = posterior.mean + posterior.std * draws.to(posterior.mean)
        return latents * self.latent_scaling

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        images = self.vae.decode((latents / self.latent_scaling).to(self.vae_dtype)).sample
        return (images.float() / 2.0 + 0.5).clamp(0.0, 1.0)

    def vae_input(self, images: Tensor) -> Tensor:
        """Images in [0, 1] as the VAE takes them: in [-1, 1], on its device, dtype and memory layout."""
        images = images.to(self.device, self.vae_dtype) * 2.0 - 1.0
        if self.compiled_unet is not None and self.device.type == "cuda":
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def predict_noise(self, model_input: Tensor, timesteps: Tensor, conditioning: UnetConditioning) -> Tensor:
        """One UNet call: the noise prediction for every row of `model_input`."""
        unet = self.compiled_unet if self.compiled_unet is not None else self.unet
        return unet(model_input, timesteps, **conditioning, return_dict=False)[0]

    @torch.no_grad()
    def denoise(
        self,
        latents: Tensor,
        condition_latents: Tensor,
        embeddings: Embeddings,
        schedules: Sequence[DdimSchedule],
        settings: EditSettings,
    ) -> Tensor:
        """Run each view's DDIM schedule with three-way classifier-free guidance, batching views together.

        Everything the steps need is on the device before the first: the loop never waits for the host, so a GPU
        (or its CUDA graphs) runs the steps back to back.
        """
        batch = BatchedSchedules.of(schedules, self.device)
        height, width = latents.shape[-2:]
        size = (height * self.vae_scale_factor, width * self.vae_scale_factor)
        latents, condition = latents.float(), condition_latents.to(self.dtype)
        if batch.reordered:
            order = torch.tensor(batch.order, device=latents.device)
            latents, condition = latents[order], condition[order]
        else:
            latents = latents.clone()  # updated in place below; leave the caller's tensor alone
        image_rows, text_conditioning = {}, {}
        for n in sorted(set(batch.active)):
            image_rows[n] = torch.cat([condition[:n], condition[:n], torch.zeros_like(condition[:n])])
            text_conditioning[n] = self.unet_conditioning(embeddings, n, size)
        for k, n in enumerate(batch.active):
            x, t = latents[:n], batch.timesteps[k, :n]
            model_input = torch.cat([torch.cat([x, x, x]).to(self.dtype), image_rows[n]], dim=1)
            noise_pred = self.predict_noise(model_input, t.repeat(3), text_conditioning[n])
            eps_text, eps_image, eps_uncond = noise_pred.float().chunk(3)
            eps = (
                eps_uncond
                + settings.guidance_scale * (eps_text - eps_image)
                + settings.image_guidance_scale * (eps_image - eps_uncond)
            )
            latents[:n] = self.sampler.step(eps, t, batch.previous[k, :n], x)
        if batch.reordered:
            inverse = sorted(range(len(batch.order)), key=batch.order.__getitem__)
            latents = latents[torch.tensor(inverse, device=latents.device)]
        return latents

    @torch.no_grad()
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
        check_batch(renders, originals, views, seeds)
        height, width = renders.shape[-2:]
        size = edit_size(height, width, self.max_edit_size, self.vae_scale_factor)
        generators = [view_generator(seed) for seed in seeds]
        schedules = self.schedules(generators, settings, noise_levels)
        renders_in = resize(renders, size)
        latents = self.encode_renders(renders_in, generators)
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators]).to(latents)
        start = torch.tensor([s.timesteps[0] for s in schedules], device=self.device)
        noisy = self.sampler.add_noise(latents.float(), noise.float(), start)
        condition = self.encode_conditions(resize(originals, size), views)
        edited = self.decode(self.denoise(noisy, condition, self.prompt_embeddings(prompt), schedules, settings))
        return resize(edited, (height, width)).to(renders)

    def schedules(
        self,
        generators: Sequence[torch.Generator],
        settings: EditSettings,
        given_levels: Optional[Sequence[int]] = None,
    ) -> List[DdimSchedule]:
        """Each view's DDIM schedule, from its noise level (given, or drawn from its own generator)."""
        return [
            ddim_schedule(
                level,
                settings.diffusion_steps,
                steps_offset=self.sampler.steps_offset,
                scale_with_noise=settings.scale_steps_with_noise,
            )
            for level in noise_levels(generators, settings, given_levels)
        ]


def guidance_rows(text: Tensor, uncond: Tensor, views: int) -> Tensor:
    """A conditioning's rows for a guidance batch of `views` views: `text` ([1, ...]) for each view, then `uncond`
    ([1, ...]) for each view twice (image only, then neither)."""
    return torch.cat([text.expand(views, *text.shape[1:]), uncond.expand(2 * views, *uncond.shape[1:])])


def resize(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize of [B, C, H, W] (antialiased when shrinking); a no-op at the same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
