"""InstructPix2Pix as an editor: noise the render, denoise it conditioned on the original view and the prompt."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from in2n.editing.base import Editor, EditSettings, check_batch, sample_noise_level, view_generator
from in2n.editing.ddim import DdimSampler, DdimSchedule, ddim_schedule
from in2n.editing.devices import diffusion_dtype
from in2n.editing.loading import load_ip2p_pipeline
from in2n.editing.sizing import edit_size
from in2n.logging import notice_once


class InstructPix2PixEditor(Editor):
    """The Iterative Dataset Update's edit of a view (DESIGN §1), on diffusers' InstructPix2Pix components.

    Args:
        model: hub id or local folder of an InstructPix2Pix pipeline.
        device: where the diffusion model runs.
        full_precision: fp32 weights; otherwise fp16 (except on the CPU, where fp32 is used and said so).
        max_edit_size: views whose long side exceeds this are edited at a reduced size and scaled back.
        cache_condition_latents: encode each original view once and keep its latents for later edits.
    """

    name = "ip2p"

    def __init__(
        self,
        model: str,
        device: torch.device,
        full_precision: bool = True,
        max_edit_size: int = 512,
        cache_condition_latents: bool = True,
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = diffusion_dtype(device, full_precision)
        if not full_precision and self.dtype == torch.float32:
            notice_once("InstructPix2Pix runs in full precision (fp32) on the CPU: fp16 is slow or unsupported there.")
        pipe = load_ip2p_pipeline(model, self.dtype)
        self.unet = pipe.unet.to(device).eval()
        self.vae = pipe.vae.to(device).eval()
        self.text_encoder = pipe.text_encoder.to(device).eval()
        self.tokenizer = pipe.tokenizer
        self.sampler = DdimSampler(dict(pipe.scheduler.config), device)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_scaling = float(self.vae.config.scaling_factor)
        self.max_edit_size = max_edit_size
        self.cache_condition_latents = cache_condition_latents
        self._prompt: Optional[Tuple[str, Tensor]] = None
        self._condition_latents: Dict[Tuple[int, int, int], Tensor] = {}

    def describe(self) -> str:
        precision = "fp32" if self.dtype == torch.float32 else "fp16"
        return f"InstructPix2Pix {self.model} ({precision} on {self.device})"

    @torch.no_grad()
    def prompt_embeddings(self, prompt: str) -> Tensor:
        """[text, unconditional] embeddings [2, L, D]; encoded once per distinct prompt."""
        if self._prompt is not None and self._prompt[0] == prompt:
            return self._prompt[1]
        max_length = self.tokenizer.model_max_length
        if len(self.tokenizer(prompt).input_ids) > max_length:
            notice_once(f"The prompt is longer than the text encoder's {max_length} tokens; the rest is ignored.")
        tokens = self.tokenizer(
            [prompt, ""], padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        embeddings = self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
        self._prompt = (prompt, embeddings)
        return embeddings

    @torch.no_grad()
    def encode_conditions(self, originals: Tensor, views: Sequence[int]) -> Tensor:
        """Latents of the original views (the distribution's mode, unscaled, as InstructPix2Pix was trained)."""
        size = tuple(originals.shape[-2:])
        keys = [(view, *size) for view in views]
        missing = [i for i, key in enumerate(keys) if key not in self._condition_latents]
        if missing:
            images = originals[missing].to(self.device, self.dtype) * 2.0 - 1.0
            latents = self.vae.encode(images).latent_dist.mode()
            if not self.cache_condition_latents:
                return latents
            for i, latent in zip(missing, latents, strict=False):
                self._condition_latents[keys[i]] = latent
        return torch.stack([self._condition_latents[key] for key in keys])

    @torch.no_grad()
    def encode_renders(self, renders: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """Scaled latents of the renders, sampled from the VAE posterior with each view's generator."""
        posterior = self.vae.encode(renders.to(self.device, self.dtype) * 2.0 - 1.0).latent_dist
        draws = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g) for g in generators])
        latents = posterior.mean + posterior.std * draws.to(posterior.mean)
        return latents * self.latent_scaling

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        images = self.vae.decode((latents / self.latent_scaling).to(self.dtype)).sample
        return (images.float() / 2.0 + 0.5).clamp(0.0, 1.0)

    @torch.no_grad()
    def denoise(
        self,
        latents: Tensor,
        condition_latents: Tensor,
        embeddings: Tensor,
        schedules: Sequence[DdimSchedule],
        settings: EditSettings,
    ) -> Tensor:
        """Run each view's DDIM schedule with three-way classifier-free guidance, batching views together.

        Schedules of different lengths are aligned at their end, so a step only includes the views that
        still have that many steps to go.
        """
        latents = latents.float().clone()  # updated in place per view below; leave the caller's tensor alone
        longest = max(len(s) for s in schedules)
        text, uncond = embeddings[0:1], embeddings[1:2]
        for k in range(longest):
            active = [i for i, s in enumerate(schedules) if k >= longest - len(s)]
            position = [k - (longest - len(schedules[i])) for i in active]
            t = torch.tensor(
                [schedules[i].timesteps[p] for i, p in zip(active, position, strict=False)], device=self.device
            )
            t_prev = torch.tensor(
                [schedules[i].previous[p] for i, p in zip(active, position, strict=False)], device=self.device
            )
            x = latents[active]
            cond = condition_latents[active]
            n = len(active)
            model_input = torch.cat(
                [torch.cat([x, x, x]).to(self.dtype), torch.cat([cond, cond, torch.zeros_like(cond)])], dim=1
            )
            hidden = torch.cat([text.expand(n, -1, -1), uncond.expand(2 * n, -1, -1)])
            noise_pred = self.unet(model_input, t.repeat(3), encoder_hidden_states=hidden, return_dict=False)[0]
            eps_text, eps_image, eps_uncond = noise_pred.float().chunk(3)
            eps = (
                eps_uncond
                + settings.guidance_scale * (eps_text - eps_image)
                + settings.image_guidance_scale * (eps_image - eps_uncond)
            )
            latents[active] = self.sampler.step(eps, t, t_prev, x)
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
    ) -> Tensor:
        check_batch(renders, originals, views, seeds)
        height, width = renders.shape[-2:]
        size = edit_size(height, width, self.max_edit_size, self.vae_scale_factor)
        if max(height, width) > self.max_edit_size:
            notice_once(
                f"Views are {width}x{height}, above --pipeline.max-edit-size {self.max_edit_size} px on the long "
                f"side: they are edited at {size[1]}x{size[0]} and scaled back (InstructPix2Pix works at 512 px and "
                "runs out of memory far above it)."
            )
        generators = [view_generator(seed) for seed in seeds]
        schedules = self.schedules(generators, settings)
        renders_in = resize(renders, size)
        latents = self.encode_renders(renders_in, generators)
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators]).to(latents)
        start = torch.tensor([s.timesteps[0] for s in schedules], device=self.device)
        noisy = self.sampler.add_noise(latents.float(), noise.float(), start)
        condition = self.encode_conditions(resize(originals, size), views)
        edited = self.decode(self.denoise(noisy, condition, self.prompt_embeddings(prompt), schedules, settings))
        return resize(edited, (height, width)).to(renders)

    def schedules(self, generators: Sequence[torch.Generator], settings: EditSettings) -> List[DdimSchedule]:
        """Each view's noise level, drawn from its own generator, and its DDIM schedule."""
        return [
            ddim_schedule(
                sample_noise_level(g, settings),
                settings.diffusion_steps,
                steps_offset=self.sampler.steps_offset,
                scale_with_noise=settings.scale_steps_with_noise,
            )
            for g in generators
        ]


def resize(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize of [B, C, H, W] (antialiased when shrinking); a no-op at the same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
