"""The CLIP metrics of Instruct-NeRF2NeRF, between renders of the original and the edited scene along a camera path.

Both metrics compare directions between L2-normalised CLIP embeddings (projections into CLIP's joint space), as in
StyleGAN-NADA:

- CLIP text-image direction similarity: for each frame i, the cosine between the image direction
  E_img(edited_i) - E_img(original_i) and the text direction E_txt(edited caption) - E_txt(original caption),
  averaged over the frames. It measures how well the edit does what the captions describe.
- CLIP direction consistency: for each pair of consecutive frames, the cosine between
  E_img(edited_i+1) - E_img(edited_i) and E_img(original_i+1) - E_img(original_i), averaged over the pairs. It
  measures whether the edited scene changes from view to view as the original does, that is whether the edit is
  consistent in 3D.

``in2n-eval`` prints both and writes them as JSON::

    {
      "clip_direction_similarity": 0.21,     # mean over the frames
      "clip_direction_consistency": 0.93,    # mean over the pairs of consecutive frames
      "num_frames": 120,
      "clip_model": "openai/clip-vit-large-patch14",
      "original_caption": "a photo of a man",
      "edited_caption": "a photo of a man with a cowboy hat",
      "original": "renders/original",
      "edited": "renders/edited",
      "per_frame": {
        "original": ["00000.png", ...],      # frame names, in the order they are compared
        "edited": ["00000.png", ...],
        "direction_similarity": [0.19, ...], # one value per frame
        "direction_consistency": [0.95, ...] # one value per pair: entry i compares frames i and i + 1
      }
    }
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import tyro
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from rich.table import Table

from in2n.errors import In2nError, option
from in2n.hub import ModelKind, load_pretrained

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
"""The CLIP the Instruct-NeRF2NeRF paper evaluates with."""
CLIP_KIND = ModelKind(
    title="CLIP model",
    marker="config.json",
    saved_with="`CLIPModel.save_pretrained(...)` and `CLIPProcessor.save_pretrained(...)`",
    example=DEFAULT_CLIP_MODEL,
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def _unit(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeddings, dim=-1)


def text_image_direction_similarity(
    original_images: torch.Tensor, edited_images: torch.Tensor, original_text: torch.Tensor, edited_text: torch.Tensor
) -> torch.Tensor:
    """Per frame, the cosine between the change the edit made to the image and the change between the captions.

    Args:
        original_images: CLIP image embeddings of the original frames, shape (frames, dim).
        edited_images: CLIP image embeddings of the edited frames, shape (frames, dim); row i is seen from the same
            camera as row i of original_images.
        original_text: CLIP text embedding of the caption of the original scene, shape (dim,).
        edited_text: CLIP text embedding of the caption of the edited scene, shape (dim,).

    Returns:
        The cosine of each frame, shape (frames,). Embeddings are L2-normalised before they are subtracted, so their
        scale does not matter; a frame the edit left unchanged has no direction and scores 0.
    """
    image_directions = _unit(edited_images) - _unit(original_images)
    text_direction = _unit(edited_text) - _unit(original_text)
    return F.cosine_similarity(image_directions, text_direction.expand_as(image_directions), dim=-1)


def direction_consistency(original_images: torch.Tensor, edited_images: torch.Tensor) -> torch.Tensor:
    """Per pair of consecutive frames, the cosine between how the edited and how the original render change.

    Args:
        original_images: CLIP image embeddings of the original frames in camera path order, shape (frames, dim).
        edited_images: CLIP image embeddings of the edited frames from the same cameras, shape (frames, dim).

    Returns:
        The cosine of each pair, shape (frames - 1,): entry i compares frames i and i + 1. Embeddings are
        L2-normalised before they are subtracted; a pair whose frames embed identically scores 0.
    """
    original, edited = _unit(original_images), _unit(edited_images)
    return F.cosine_similarity(edited[1:] - edited[:-1], original[1:] - original[:-1], dim=-1)


@dataclass(frozen=True)
class Frames:
    """The frames of one render, in camera path order."""

    names: List[str]
    """Name of each frame: its file name, or ``video.mp4[i]`` for the frames of a video."""
    load: Callable[[int], Image.Image]
    """Reads frame i as an RGB image."""

    def __len__(self) -> int:
        return len(self.names)


def _natural_key(name: str) -> Tuple[Union[str, int], ...]:
    """Sort key that orders ``frame_9.png`` before ``frame_10.png``, so unpadded numbering keeps the path order."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise In2nError(
            f"{path} could not be read as an image ({_first_line(error)}). Replace it, or remove it from the folder "
            "together with the frame of the same camera in the other render."
        ) from None


def _read_video(path: Path, option: str) -> Frames:
    import imageio.v3 as iio  # only videos need it

    try:
        # Decodes every frame at once, which is simple but takes memory; folders of frames are read lazily.
        video = iio.imread(path, index=None)
    except Exception as error:  # imageio reports a missing backend and a broken file with many exception types
        raise In2nError(
            f"{option} {path}: the video could not be decoded ({_first_line(error)}). Install a video backend with "
            "`pip install av` (or `pip install imageio[ffmpeg]`), or pass folders of frames instead, written by "
            "`ns-render ... --output-format images` or extracted with `ffmpeg -i video.mp4 frames/%05d.png`."
        ) from None
    return Frames(
        [f"{path.name}[{index}]" for index in range(len(video))], lambda i: Image.fromarray(video[i]).convert("RGB")
    )


def load_frames(source: Path, option: str) -> Frames:
    """The frames of a folder of PNG/JPG images, in natural file name order, or of a video.

    Args:
        source: The folder or the video.
        option: The command-line option that named it, for error messages.
    """
    if source.is_dir():
        paths = sorted(
            (path for path in source.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda path: _natural_key(path.name),
        )
        frames = Frames([path.name for path in paths], lambda i: _open_rgb(paths[i]))
    elif source.is_file():
        if source.suffix.lower() not in VIDEO_SUFFIXES:
            raise In2nError(
                f"{option} {source} is neither a folder of frames nor a video ({', '.join(VIDEO_SUFFIXES)}). Pass the "
                "folder of PNG/JPG frames or the video of the render."
            )
        frames = _read_video(source, option)
    else:
        raise In2nError(
            f"{option} {source}: no such folder or file. Check the path; it should name the folder of PNG/JPG frames "
            "or the video that `ns-render` wrote."
        )
    if len(frames) == 0:
        raise In2nError(
            f"{option} {source} holds no frames. Pass the folder of PNG/JPG frames that "
            "`ns-render ... --output-format images` wrote, or a video of the render."
        )
    return frames


def _projection(output: Any) -> torch.Tensor:
    """The projected embeddings, which transformers 5 returns as the pooler output and transformers 4 as a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass
class ClipEmbedder:
    """A CLIP model with its processor, embedding images and captions into CLIP's joint space."""

    model: CLIPModel
    """The CLIP model, in eval mode on device."""
    processor: CLIPProcessor
    """Resizes and normalises images and tokenizes captions the way the model was trained."""
    device: torch.device
    """Where the model runs."""

    @classmethod
    def load(cls, model: str) -> ClipEmbedder:
        """Loads CLIP from a hub id or a folder saved with ``save_pretrained``, on the GPU when there is one."""
        from transformers import CLIPModel, CLIPProcessor

        def load(source: str) -> Tuple[CLIPModel, CLIPProcessor]:
            # The model first: when nothing is cached, its error says so more plainly than the processor's.
            return CLIPModel.from_pretrained(source), CLIPProcessor.from_pretrained(source)

        with option("--clip-model"):
            clip, processor = load_pretrained(load, model, CLIP_KIND)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return cls(clip.to(device).eval(), processor, device)

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """CLIP image embeddings (not normalised), shape (images, dim), in fp32 on the CPU."""
        pixel_values = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        output = self.model.get_image_features(pixel_values=pixel_values.to(self.device, self.model.dtype))
        return _projection(output).float().cpu()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings (not normalised), shape (texts, dim), in fp32 on the CPU."""
        inputs = self.processor(text=list(texts), padding=True, truncation=True, return_tensors="pt")
        return _projection(self.model.get_text_features(**inputs.to(self.device))).float().cpu()

    def embed_frames(self, frames: Frames, batch_size: int) -> torch.Tensor:
        """Image embeddings of all frames, shape (frames, dim), reading batch_size frames at a time."""
        batches = [
            self.embed_images([frames.load(i) for i in range(start, min(start + batch_size, len(frames)))])
            for start in range(0, len(frames), batch_size)
        ]
        return torch.cat(batches)


@dataclass
class ClipMetricsConfig:
    """Compute Instruct-NeRF2NeRF's CLIP metrics between renders of the original and the edited scene.

    Render both scenes along the same camera path (for example with `ns-render camera-path --output-format images`),
    then compare them frame by frame: CLIP text-image direction similarity (does the edit do what the captions say?)
    and CLIP direction consistency (does the edited scene change from view to view as the original does?). Videos
    are decoded into memory at once; prefer folders of frames for long high-resolution renders.
    """

    original: Path
    """Renders of the original scene: a folder of PNG/JPG frames (paired in natural file name order) or a video."""
    edited: Path
    """Renders of the edited scene from the same cameras: a folder or a video with as many frames as --original."""
    original_caption: str
    """Caption of the original scene, e.g. "a photo of a man"."""
    edited_caption: str
    """Caption of the edited scene, e.g. "a photo of a man with a cowboy hat"."""
    clip_model: str = DEFAULT_CLIP_MODEL
    """CLIP model: a Hugging Face hub id, or a folder saved with `save_pretrained` of CLIPModel and CLIPProcessor."""
    output: Optional[Path] = None
    """Where to write the JSON report; without it the metrics are only printed."""
    batch_size: int = 16
    """Frames embedded per forward pass of CLIP; lower it if memory runs out."""


def _check_options(config: ClipMetricsConfig) -> None:
    for flag, caption in (
        ("--original-caption", config.original_caption),
        ("--edited-caption", config.edited_caption),
    ):
        if not caption.strip():
            raise In2nError(f'{flag} is empty; describe the scene in a few words, e.g. "a photo of a man".')
    if config.original_caption.strip() == config.edited_caption.strip():
        raise In2nError(
            f"--original-caption and --edited-caption are both {config.original_caption!r}, so there is no text "
            "direction to compare the edit with. Describe the edited scene in --edited-caption, e.g. "
            '"a photo of a man with a cowboy hat".'
        )
    if config.batch_size < 1:
        raise In2nError(f"--batch-size is {config.batch_size}; it must be at least 1.")


def evaluate(config: ClipMetricsConfig) -> Dict[str, Any]:
    """Reads both renders, embeds them and the captions with CLIP, and returns the report (see the module docstring)."""
    _check_options(config)
    original = load_frames(config.original, "--original")
    edited = load_frames(config.edited, "--edited")
    if len(original) != len(edited):
        raise In2nError(
            f"--original has {len(original)} frames ({config.original}) but --edited has {len(edited)} "
            f"({config.edited}). The renders are compared frame by frame, so render both along the same camera path "
            "with the same frame rate and duration."
        )
    if len(original) < 2:
        raise In2nError(
            "--original and --edited hold a single frame each, but direction consistency compares consecutive "
            "frames. Render at least 2 frames along the camera path."
        )
    # Loaded after the frames are found, so mistakes in the paths are reported before the slow model load.
    embedder = ClipEmbedder.load(config.clip_model)
    original_images = embedder.embed_frames(original, config.batch_size)
    edited_images = embedder.embed_frames(edited, config.batch_size)
    original_text, edited_text = embedder.embed_texts([config.original_caption, config.edited_caption])
    similarity = text_image_direction_similarity(original_images, edited_images, original_text, edited_text)
    consistency = direction_consistency(original_images, edited_images)
    return {
        "clip_direction_similarity": similarity.double().mean().item(),
        "clip_direction_consistency": consistency.double().mean().item(),
        "num_frames": len(original),
        "clip_model": config.clip_model,
        "original_caption": config.original_caption,
        "edited_caption": config.edited_caption,
        "original": str(config.original),
        "edited": str(config.edited),
        "per_frame": {
            "original": original.names,
            "edited": edited.names,
            "direction_similarity": similarity.tolist(),
            "direction_consistency": consistency.tolist(),
        },
    }


def print_report(report: Dict[str, Any]) -> None:
    """The two metrics as a small table."""
    table = Table(title=f"CLIP metrics over {report['num_frames']} frames ({report['clip_model']})")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    table.add_row("CLIP text-image direction similarity", f"{report['clip_direction_similarity']:.4f}")
    table.add_row("CLIP direction consistency", f"{report['clip_direction_consistency']:.4f}")
    CONSOLE.print(table)


def entrypoint() -> None:
    """Command-line entry point of ``in2n-eval``."""
    config = tyro.cli(ClipMetricsConfig)
    report = evaluate(config)
    print_report(report)
    if config.output is not None:
        config.output.parent.mkdir(parents=True, exist_ok=True)
        config.output.write_text(json.dumps(report, indent=2) + "\n")
        CONSOLE.print(f"Wrote the report to {config.output}")
