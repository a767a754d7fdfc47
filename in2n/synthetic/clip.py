"""A CLIP model with random weights, built offline.

The saved folder has the layout of a downloaded checkpoint such as ``openai/clip-vit-large-patch14`` and loads with
``CLIPModel.from_pretrained(folder)`` and ``CLIPProcessor.from_pretrained(folder)``, so the CLIP metrics can be tested
end to end without the real weights. The scores it gives are meaningless; only their shapes and ranges are real.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from in2n.synthetic.ip2p import _MAX_PROMPT_TOKENS, _byte_level_tokenizer

_HIDDEN_SIZE = 32
_INTERMEDIATE_SIZE = 37
_NUM_LAYERS = 2
_NUM_HEADS = 4
_IMAGE_SIZE = 32
_PATCH_SIZE = 8
_PROJECTION_DIM = 16


def save_random_clip(folder: Path, seed: int = 0) -> Path:
    """Builds a CLIP model of a few hundred kB with random weights and saves it with its processor.

    The text and vision towers are 2-layer transformers of width 32 projecting to 16 dimensions; images are resized
    and cropped to 32x32 (16 patches of 8x8). The tokenizer is byte level, so any caption tokenizes.

    Args:
        folder: Where to save; existing files of the same names are overwritten.
        seed: Seed of the random weights; the same seed gives the same weights. The global RNG state is restored.

    Returns:
        folder, to pass to ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained``.
    """
    tokenizer = _byte_level_tokenizer()
    tower = {
        "hidden_size": _HIDDEN_SIZE,
        "intermediate_size": _INTERMEDIATE_SIZE,
        "num_hidden_layers": _NUM_LAYERS,
        "num_attention_heads": _NUM_HEADS,
    }
    config = CLIPConfig(
        text_config={
            **tower,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": _MAX_PROMPT_TOKENS,
            # CLIP pools the text at the first end-of-text token, so these ids must match the tokenizer's.
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**tower, "image_size": _IMAGE_SIZE, "patch_size": _PATCH_SIZE},
        projection_dim=_PROJECTION_DIM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": _IMAGE_SIZE}, crop_size={"height": _IMAGE_SIZE, "width": _IMAGE_SIZE}
    )
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
