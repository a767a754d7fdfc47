"""InstructPix2Pix pipelines with random weights, built offline.

A saved pipeline has the folder layout of ``timbrooks/instruct-pix2pix`` and loads with
``StableDiffusionInstructPix2PixPipeline.from_pretrained(folder)``, so the editing code can be tested and benchmarked
without downloading the real checkpoint: ``"tiny"`` for fast tests, ``"sd15"`` for the real compute and memory cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Tuple

import torch
from diffusers import (
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

IP2PSize = Literal["tiny", "sd15"]

_BOS_TOKEN = "<|startoftext|>"
_EOS_TOKEN = "<|endoftext|>"
_MAX_PROMPT_TOKENS = 77


@dataclass(frozen=True)
class IP2PShapes:
    """Architecture of the networks of an InstructPix2Pix pipeline (the weights themselves are random)."""

    unet_block_out_channels: Tuple[int, ...]
    """Channels of each UNet resolution level."""
    unet_down_block_types: Tuple[str, ...]
    """Diffusers block class of each UNet encoder level."""
    unet_up_block_types: Tuple[str, ...]
    """Diffusers block class of each UNet decoder level."""
    unet_layers_per_block: int
    """Residual blocks per UNet encoder level."""
    unet_attention_head_dim: int
    """Diffusers' (misnamed) ``attention_head_dim``, which is the number of attention heads."""
    unet_sample_size: int
    """Latent side length the UNet was trained at; sets the pipeline's default output size."""
    vae_block_out_channels: Tuple[int, ...]
    """Channels of each VAE level; n levels make the latents 2^(n-1) times smaller than the image."""
    vae_layers_per_block: int
    """Residual blocks per VAE level."""
    vae_sample_size: int
    """Image side length the VAE was trained at; only used when tiling."""
    text_hidden_size: int
    """Width of the CLIP text encoder, which is also the UNet's cross-attention width."""
    text_intermediate_size: int
    """Hidden width of the text encoder's MLPs."""
    text_num_layers: int
    """Transformer layers of the text encoder."""
    text_num_heads: int
    """Attention heads of the text encoder."""
    text_vocab_size: int
    """Rows of the token embedding; at least the tokenizer's length (see ``_byte_level_tokenizer``)."""
    text_projection_dim: int
    """Output width of CLIP's text projection (unused by the pipeline but part of the config)."""
    text_hidden_act: str
    """Activation of the text encoder's MLPs."""


TINY_SHAPES = IP2PShapes(
    unet_block_out_channels=(32, 64),
    unet_down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    unet_layers_per_block=1,
    unet_attention_head_dim=2,
    unet_sample_size=8,
    # Two levels give a VAE scale factor of 2 rather than SD's 8, which keeps latents big enough for the UNet on
    # test-sized images.
    vae_block_out_channels=(32, 64),
    vae_layers_per_block=1,
    vae_sample_size=32,
    text_hidden_size=32,
    text_intermediate_size=37,
    text_num_layers=2,
    text_num_heads=4,
    text_vocab_size=1000,
    text_projection_dim=32,
    text_hidden_act="gelu",
)
"""A pipeline of a few MB that runs in well under a second on CPU."""

SD15_SHAPES = IP2PShapes(
    unet_block_out_channels=(320, 640, 1280, 1280),
    unet_down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    unet_up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    unet_layers_per_block=2,
    unet_attention_head_dim=8,
    unet_sample_size=64,
    vae_block_out_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    vae_sample_size=512,
    text_hidden_size=768,
    text_intermediate_size=3072,
    text_num_layers=12,
    text_num_heads=12,
    text_vocab_size=49408,
    text_projection_dim=768,
    text_hidden_act="quick_gelu",
)
"""The shapes of Stable Diffusion 1.5 / ``timbrooks/instruct-pix2pix`` (UNet, VAE and CLIP ViT-L/14 text)."""

IP2P_SHAPES: Dict[str, IP2PShapes] = {"tiny": TINY_SHAPES, "sd15": SD15_SHAPES}


def _byte_level_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer without merges: every word becomes its UTF-8 bytes, so any prompt tokenizes.

    Ids follow the layout of CLIP's real vocabulary: the 256 byte characters, then their end-of-word forms, then the
    special tokens (which the real vocabulary puts after its 48894 merged tokens).
    """
    # Sorting by code point reproduces the order of GPT-2's bytes_to_unicode table, which CLIP's vocabulary starts with.
    byte_characters = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = byte_characters + [character + "</w>" for character in byte_characters] + [_BOS_TOKEN, _EOS_TOKEN]
    return CLIPTokenizer(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=[],
        bos_token=_BOS_TOKEN,
        eos_token=_EOS_TOKEN,
        pad_token=_EOS_TOKEN,
        unk_token=_EOS_TOKEN,
        model_max_length=_MAX_PROMPT_TOKENS,
    )


def _text_config(shapes: IP2PShapes, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """CLIP text encoder config whose special token ids match the tokenizer."""
    if len(tokenizer) > shapes.text_vocab_size:
        raise ValueError(f"A vocabulary of {shapes.text_vocab_size} cannot embed {len(tokenizer)} tokens")
    return CLIPTextConfig(
        hidden_size=shapes.text_hidden_size,
        intermediate_size=shapes.text_intermediate_size,
        num_hidden_layers=shapes.text_num_layers,
        num_attention_heads=shapes.text_num_heads,
        vocab_size=shapes.text_vocab_size,
        max_position_embeddings=_MAX_PROMPT_TOKENS,
        hidden_act=shapes.text_hidden_act,
        projection_dim=shapes.text_projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_random_ip2p(
    size: IP2PSize = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32
) -> StableDiffusionInstructPix2PixPipeline:
    """Builds an InstructPix2Pix pipeline with random weights, without touching the network.

    The tokenizer is byte level and much smaller than CLIP's 49408 tokens. For ``"sd15"`` the text encoder keeps the
    real 49408-row embedding anyway (the unused rows cost 38 MB next to the 12 transformer layers), so parameter
    counts and memory match the real checkpoint.

    Args:
        size: ``"tiny"`` for tests or ``"sd15"`` for the real architecture (about 1.07B parameters, 4.3 GB in fp32).
        seed: Seed of the random weights; the same seed gives the same weights. The global RNG state is restored.
        dtype: Dtype of the returned networks (they are initialised in fp32 so the weights do not depend on it).

    Returns:
        The pipeline, on the CPU.
    """
    shapes = IP2P_SHAPES[size]
    tokenizer = _byte_level_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=shapes.unet_sample_size,
            # InstructPix2Pix concatenates the noisy latents with the latents of the image to edit.
            in_channels=8,
            out_channels=4,
            down_block_types=shapes.unet_down_block_types,
            up_block_types=shapes.unet_up_block_types,
            block_out_channels=shapes.unet_block_out_channels,
            layers_per_block=shapes.unet_layers_per_block,
            cross_attention_dim=shapes.text_hidden_size,
            attention_head_dim=shapes.unet_attention_head_dim,
        )
        vae = AutoencoderKL(
            sample_size=shapes.vae_sample_size,
            down_block_types=("DownEncoderBlock2D",) * len(shapes.vae_block_out_channels),
            up_block_types=("UpDecoderBlock2D",) * len(shapes.vae_block_out_channels),
            block_out_channels=shapes.vae_block_out_channels,
            layers_per_block=shapes.vae_layers_per_block,
            latent_channels=4,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(_text_config(shapes, tokenizer))
    # The scheduler config of timbrooks/instruct-pix2pix. Its DDIM/PNDM keys do nothing for Euler, but from_config
    # keeps them, so a DDIMScheduler made from this config gets clip_sample=False like one made from the real one.
    scheduler = EulerAncestralDiscreteScheduler.from_config(
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "steps_offset": 1,
            "prediction_type": "epsilon",
            "trained_betas": None,
            "clip_sample": False,
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
        }
    )
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # Diffusers warns on every cast, so only cast when it changes something.
    return pipeline if dtype == torch.float32 else pipeline.to(dtype=dtype)


def save_random_ip2p(folder: Path, size: IP2PSize = "tiny", seed: int = 0) -> Path:
    """Builds a random fp32 InstructPix2Pix pipeline and saves it in the layout of a downloaded checkpoint.

    Args:
        folder: Where to save; existing files of the same names are overwritten.
        size: Architecture, see ``build_random_ip2p``.
        seed: Seed of the random weights.

    Returns:
        folder, to pass to ``StableDiffusionInstructPix2PixPipeline.from_pretrained``.
    """
    build_random_ip2p(size=size, seed=seed).save_pretrained(folder)
    return folder
