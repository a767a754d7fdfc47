"""InstructPix2Pix pipelines with random weights, built offline.

A saved pipeline has the folder layout of ``timbrooks/instruct-pix2pix`` (for the SDXL sizes, of
``diffusers/sdxl-instructpix2pix-768``) and loads with the diffusers pipeline class of its family, so the editing code
can be tested and benchmarked without downloading the real checkpoints: ``"tiny"`` and ``"tiny-sdxl"`` for fast tests,
``"sd15"`` and ``"sdxl"`` for the real compute and memory cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple, Union

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionXLInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

IP2PSize = Literal["tiny", "sd15", "tiny-sdxl", "sdxl"]

_BOS_TOKEN = "<|startoftext|>"
_EOS_TOKEN = "<|endoftext|>"
_MAX_PROMPT_TOKENS = 77
_SDXL_SIZE_CONDITIONS = 6
"""SDXL's size conditioning: original height and width, crop top and left, target height and width."""


@dataclass(frozen=True)
class TextEncoderShapes:
    """Architecture of a CLIP text encoder."""

    hidden_size: int
    """Width of the encoder; the UNet's cross-attention width is that of all text encoders together."""
    intermediate_size: int
    """Hidden width of the encoder's MLPs."""
    num_layers: int
    """Transformer layers."""
    num_heads: int
    """Attention heads."""
    vocab_size: int
    """Rows of the token embedding; at least the tokenizer's length (see ``_byte_level_tokenizer``)."""
    projection_dim: int
    """Output width of CLIP's text projection (SDXL's pooled text embedding; unused by SD 1.5, but in the config)."""
    hidden_act: str
    """Activation of the MLPs."""


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
    unet_attention_head_dim: Union[int, Tuple[int, ...]]
    """Diffusers' (misnamed) ``attention_head_dim``, which is the number of attention heads (per level if a tuple)."""
    unet_transformer_layers_per_block: Union[int, Tuple[int, ...]]
    """Transformer blocks in each attention block (per level if a tuple)."""
    unet_use_linear_projection: bool
    """Linear rather than 1x1-convolution projections into and out of the attention blocks."""
    unet_sample_size: int
    """Latent side length the UNet was trained at; sets the pipeline's default output size."""
    unet_addition_time_embed_dim: Optional[int]
    """Width of the embedding of each of SDXL's six size conditions; None for SD 1.5, which has none."""
    vae_block_out_channels: Tuple[int, ...]
    """Channels of each VAE level; n levels make the latents 2^(n-1) times smaller than the image."""
    vae_layers_per_block: int
    """Residual blocks per VAE level."""
    vae_sample_size: int
    """Image side length the VAE was trained at; only used when tiling."""
    vae_scaling_factor: float
    """Scale of the latents the UNet works on (SD 1.5: 0.18215, SDXL: 0.13025)."""
    text: TextEncoderShapes
    """The (first) CLIP text encoder."""
    text_2: Optional[TextEncoderShapes]
    """SDXL's second text encoder, with projection; None for SD 1.5."""

    @property
    def sdxl(self) -> bool:
        """Whether these are the shapes of an SDXL InstructPix2Pix."""
        return self.text_2 is not None


CLIP_VIT_L = TextEncoderShapes(
    hidden_size=768,
    intermediate_size=3072,
    num_layers=12,
    num_heads=12,
    vocab_size=49408,
    projection_dim=768,
    hidden_act="quick_gelu",
)
"""OpenAI's CLIP ViT-L/14 text encoder: SD 1.5's, and SDXL's first."""

OPENCLIP_VIT_BIGG = TextEncoderShapes(
    hidden_size=1280,
    intermediate_size=5120,
    num_layers=32,
    num_heads=20,
    vocab_size=49408,
    projection_dim=1280,
    hidden_act="gelu",
)
"""OpenCLIP's ViT-bigG/14 text encoder: SDXL's second."""

TINY_TEXT = TextEncoderShapes(
    hidden_size=32,
    intermediate_size=37,
    num_layers=2,
    num_heads=4,
    vocab_size=1000,
    projection_dim=32,
    hidden_act="gelu",
)
"""A text encoder of a few hundred kB."""

TINY_SHAPES = IP2PShapes(
    unet_block_out_channels=(32, 64),
    unet_down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    unet_layers_per_block=1,
    unet_attention_head_dim=2,
    unet_transformer_layers_per_block=1,
    unet_use_linear_projection=False,
    unet_sample_size=8,
    unet_addition_time_embed_dim=None,
    # Two levels give a VAE scale factor of 2 rather than SD's 8, which keeps latents big enough for the UNet on
    # test-sized images.
    vae_block_out_channels=(32, 64),
    vae_layers_per_block=1,
    vae_sample_size=32,
    vae_scaling_factor=0.18215,
    text=TINY_TEXT,
    text_2=None,
)
"""A pipeline of a few MB that runs in well under a second on CPU."""

SD15_SHAPES = IP2PShapes(
    unet_block_out_channels=(320, 640, 1280, 1280),
    unet_down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    unet_up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    unet_layers_per_block=2,
    unet_attention_head_dim=8,
    unet_transformer_layers_per_block=1,
    unet_use_linear_projection=False,
    unet_sample_size=64,
    unet_addition_time_embed_dim=None,
    vae_block_out_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    vae_sample_size=512,
    vae_scaling_factor=0.18215,
    text=CLIP_VIT_L,
    text_2=None,
)
"""The shapes of Stable Diffusion 1.5 / ``timbrooks/instruct-pix2pix`` (UNet, VAE and CLIP ViT-L/14 text)."""

TINY_SDXL_SHAPES = IP2PShapes(
    unet_block_out_channels=(32, 64),
    unet_down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    unet_layers_per_block=1,
    unet_attention_head_dim=(2, 4),
    unet_transformer_layers_per_block=(1, 2),
    unet_use_linear_projection=True,
    unet_sample_size=8,
    unet_addition_time_embed_dim=8,
    vae_block_out_channels=(32, 64),
    vae_layers_per_block=1,
    vae_sample_size=32,
    vae_scaling_factor=0.13025,
    text=TINY_TEXT,
    text_2=TINY_TEXT,
)
"""An SDXL InstructPix2Pix of a few MB with every kind of SDXL conditioning, for tests."""

SDXL_SHAPES = IP2PShapes(
    unet_block_out_channels=(320, 640, 1280),
    unet_down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    unet_layers_per_block=2,
    unet_attention_head_dim=(5, 10, 20),
    unet_transformer_layers_per_block=(1, 2, 10),
    unet_use_linear_projection=True,
    unet_sample_size=96,
    unet_addition_time_embed_dim=256,
    vae_block_out_channels=(128, 256, 512, 512),
    vae_layers_per_block=2,
    vae_sample_size=1024,
    vae_scaling_factor=0.13025,
    text=CLIP_VIT_L,
    text_2=OPENCLIP_VIT_BIGG,
)
"""The shapes of SDXL / ``diffusers/sdxl-instructpix2pix-768`` (about 3.5B parameters, 14 GB in fp32)."""

IP2P_SHAPES: Dict[str, IP2PShapes] = {
    "tiny": TINY_SHAPES,
    "sd15": SD15_SHAPES,
    "tiny-sdxl": TINY_SDXL_SHAPES,
    "sdxl": SDXL_SHAPES,
}


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


def _text_config(shapes: TextEncoderShapes, tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    """CLIP text encoder config whose special token ids match the tokenizer."""
    if len(tokenizer) > shapes.vocab_size:
        raise ValueError(f"A vocabulary of {shapes.vocab_size} cannot embed {len(tokenizer)} tokens")
    return CLIPTextConfig(
        hidden_size=shapes.hidden_size,
        intermediate_size=shapes.intermediate_size,
        num_hidden_layers=shapes.num_layers,
        num_attention_heads=shapes.num_heads,
        vocab_size=shapes.vocab_size,
        max_position_embeddings=_MAX_PROMPT_TOKENS,
        hidden_act=shapes.hidden_act,
        projection_dim=shapes.projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _unet(shapes: IP2PShapes) -> UNet2DConditionModel:
    """The UNet: its cross-attention reads all text encoders' hidden states side by side; SDXL's also takes the pooled
    text embedding and the size conditions ("text_time")."""
    text_encoders = [shapes.text] if shapes.text_2 is None else [shapes.text, shapes.text_2]
    size_conditioning = {}
    if shapes.sdxl:
        if shapes.unet_addition_time_embed_dim is None:
            raise ValueError("SDXL shapes need unet_addition_time_embed_dim")
        size_conditioning = dict(
            addition_embed_type="text_time",
            addition_time_embed_dim=shapes.unet_addition_time_embed_dim,
            projection_class_embeddings_input_dim=_SDXL_SIZE_CONDITIONS * shapes.unet_addition_time_embed_dim
            + shapes.text_2.projection_dim,
        )
    return UNet2DConditionModel(
        sample_size=shapes.unet_sample_size,
        # InstructPix2Pix concatenates the noisy latents with the latents of the image to edit.
        in_channels=8,
        out_channels=4,
        down_block_types=shapes.unet_down_block_types,
        up_block_types=shapes.unet_up_block_types,
        block_out_channels=shapes.unet_block_out_channels,
        layers_per_block=shapes.unet_layers_per_block,
        cross_attention_dim=sum(encoder.hidden_size for encoder in text_encoders),
        attention_head_dim=shapes.unet_attention_head_dim,
        transformer_layers_per_block=shapes.unet_transformer_layers_per_block,
        use_linear_projection=shapes.unet_use_linear_projection,
        **size_conditioning,
    )


_SD15_SCHEDULER = {
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
"""The scheduler config of timbrooks/instruct-pix2pix (EulerAncestralDiscreteScheduler). Its DDIM/PNDM keys do nothing
for Euler, but from_config keeps them, so a DDIMScheduler made from this config gets clip_sample=False like one made
from the real one."""

_SDXL_SCHEDULER = {
    **_SD15_SCHEDULER,
    "interpolation_type": "linear",
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}
"""The scheduler config of SDXL's checkpoints (EulerDiscreteScheduler): SD 1.5's noise schedule."""


def build_random_ip2p(size: IP2PSize = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32) -> DiffusionPipeline:
    """Builds an InstructPix2Pix pipeline with random weights, without touching the network.

    The tokenizer is byte level and much smaller than CLIP's 49408 tokens. For ``"sd15"`` and ``"sdxl"`` the text
    encoders keep the real 49408-row embeddings anyway (the unused rows are small next to the transformer layers), so
    parameter counts and memory match the real checkpoints.

    Args:
        size: ``"tiny"`` for tests or ``"sd15"`` for the real architecture (about 1.07B parameters, 4.3 GB in fp32) of
            a StableDiffusionInstructPix2PixPipeline; ``"tiny-sdxl"`` or ``"sdxl"`` (about 3.5B parameters, 14 GB in
            fp32) of a StableDiffusionXLInstructPix2PixPipeline.
        seed: Seed of the random weights; the same seed gives the same weights. The global RNG state is restored.
        dtype: Dtype of the returned networks (they are initialised in fp32 so the weights do not depend on it).

    Returns:
        The pipeline, on the CPU.
    """
    shapes = IP2P_SHAPES[size]
    tokenizer = _byte_level_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _unet(shapes)
        vae = AutoencoderKL(
            sample_size=shapes.vae_sample_size,
            down_block_types=("DownEncoderBlock2D",) * len(shapes.vae_block_out_channels),
            up_block_types=("UpDecoderBlock2D",) * len(shapes.vae_block_out_channels),
            block_out_channels=shapes.vae_block_out_channels,
            layers_per_block=shapes.vae_layers_per_block,
            latent_channels=4,
            scaling_factor=shapes.vae_scaling_factor,
        )
        text_encoder = CLIPTextModel(_text_config(shapes.text, tokenizer))
        text_encoder_2 = None
        if shapes.text_2 is not None:
            text_encoder_2 = CLIPTextModelWithProjection(_text_config(shapes.text_2, tokenizer))
    # Schedulers keep their tables on the CPU (diffusers moves them there), also when the networks are built on the meta
    # device to count their parameters.
    with torch.device("cpu"):
        sd15_scheduler = EulerAncestralDiscreteScheduler.from_config(_SD15_SCHEDULER)
        sdxl_scheduler = EulerDiscreteScheduler.from_config(_SDXL_SCHEDULER)
    if text_encoder_2 is None:
        pipeline: DiffusionPipeline = StableDiffusionInstructPix2PixPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=sd15_scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        pipeline = StableDiffusionXLInstructPix2PixPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=_byte_level_tokenizer(),
            unet=unet,
            scheduler=sdxl_scheduler,
            add_watermarker=False,
        )
    # Diffusers warns on every cast, so only cast when it changes something.
    return pipeline if dtype == torch.float32 else pipeline.to(dtype=dtype)


def save_random_ip2p(folder: Path, size: IP2PSize = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """Builds a random InstructPix2Pix pipeline and saves it in the layout of a downloaded checkpoint.

    Args:
        folder: Where to save; existing files of the same names are overwritten.
        size: Architecture, see ``build_random_ip2p``.
        seed: Seed of the random weights.
        dtype: Dtype of the saved weights: fp16 halves the files of the large sizes (the weights are drawn in fp32
            either way).

    Returns:
        folder, to pass to ``from_pretrained`` of the pipeline class of its family.
    """
    build_random_ip2p(size=size, seed=seed, dtype=dtype).save_pretrained(folder)
    return folder
