"""CLIP metrics: the formulas on hand-computed embeddings, and ``in2n-eval`` end to end on a random CLIP."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.errors import In2nError
from in2n.synthetic.clip import save_random_clip
from in2n.tools.clip_metrics import (
    ClipEmbedder,
    direction_consistency,
    load_frames,
    text_image_direction_similarity,
)
from tests.conftest import ns
from tests.helpers import flat

NUM_FRAMES = 11
ORIGINAL_CAPTION = "a photo of a man"
EDITED_CAPTION = "a photo of a man with a cowboy hat"


def vectors(*rows: List[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_direction_similarity_matches_hand_computed_cosines() -> None:
    # The text direction is (-1, 1), at 135 degrees.
    original_text, edited_text = vectors([1.0, 0.0], [0.0, 1.0])
    original_images = vectors([1.0, 0.0], [0.0, 1.0], [1.0, 0.0])
    # Frame 0 moves like the text, frame 1 the opposite way; frame 2 moves from 0 to 45 degrees on the unit circle,
    # a direction at 112.5 degrees, 22.5 degrees off the text's. Its unnormalised embedding checks the normalisation.
    edited_images = vectors([0.0, 1.0], [1.0, 0.0], [3.0, 3.0])

    similarity = text_image_direction_similarity(original_images, edited_images, original_text, edited_text)

    torch.testing.assert_close(similarity, torch.tensor([1.0, -1.0, math.cos(math.pi / 8)]))


def test_direction_consistency_matches_hand_computed_cosines() -> None:
    # The original turns by 90 degrees from frame to frame.
    original_images = vectors([1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0])
    edited_images = vectors([2.0, 0.0], [0.0, 5.0], [1.0, 0.0], [0.0, 1.0])
    # Pair 0: the edited render changes along (-1, 1) like the original. Pair 1: along (1, -1), perpendicular to the
    # original's (-1, -1). Pair 2: along (-1, 1), against the original's (1, -1).
    consistency = direction_consistency(original_images, edited_images)

    torch.testing.assert_close(consistency, torch.tensor([1.0, 0.0, -1.0]))


def test_frames_the_edit_left_unchanged_score_zero() -> None:
    same = vectors([0.6, 0.8], [0.6, 0.8])
    texts = vectors([1.0, 0.0], [0.0, 1.0])
    assert text_image_direction_similarity(same, same, *texts).tolist() == [0.0, 0.0]
    assert direction_consistency(same, vectors([1.0, 0.0], [0.0, 1.0])).tolist() == [0.0]


def write_frames(folder: Path, names: List[str], seed: int, tint: np.ndarray) -> Path:
    """Frames of a square moving across a gradient, with a colour tint standing in for an edit."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index, name in enumerate(names):
        image = np.zeros((48, 64, 3))
        image[..., 0] = np.linspace(0.0, 1.0, 64)
        image[..., 2] = np.linspace(0.0, 1.0, 48)[:, None]
        image[10:30, 4 + 4 * index : 24 + 4 * index] = rng.uniform(size=3)
        pixels = np.clip(image * tint * 255.0, 0.0, 255.0).astype(np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A random CLIP, and an original and an edited render along the same path, named differently."""
    root = tmp_path_factory.mktemp("clip_metrics")
    # Unpadded numbers check the natural order (9 before 10); the edited render is JPG with other names.
    original = write_frames(root / "original", [f"{i}.png" for i in range(NUM_FRAMES)], 0, np.array([1.0, 1.0, 1.0]))
    edited = write_frames(
        root / "edited", [f"edit_{i:03d}.jpg" for i in range(NUM_FRAMES)], 0, np.array([1.3, 0.8, 0.5])
    )
    return {"clip": save_random_clip(root / "clip", seed=0), "original": original, "edited": edited}


def in2n_eval(*args: object, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [ns("in2n-eval"), *(str(arg) for arg in args)], capture_output=True, text=True, env=env, timeout=300
    )


def captions() -> List[str]:
    return ["--original-caption", ORIGINAL_CAPTION, "--edited-caption", EDITED_CAPTION]


@pytest.mark.e2e
def test_cli_writes_the_report_computed_in_process(renders: Dict[str, Path], tmp_path: Path) -> None:
    report_path = tmp_path / "reports" / "report.json"
    result = in2n_eval(
        "--original", renders["original"], "--edited", renders["edited"], *captions(),
        "--clip-model", renders["clip"], "--output", report_path, "--batch-size", 4, hf_home=tmp_path / "hf",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "CLIP text-image direction similarity" in result.stdout and "CLIP direction consistency" in result.stdout

    report = json.loads(report_path.read_text())
    assert set(report) == {
        "clip_direction_similarity", "clip_direction_consistency", "num_frames", "clip_model", "original_caption",
        "edited_caption", "original", "edited", "per_frame",
    }  # fmt: skip
    assert report["num_frames"] == NUM_FRAMES
    assert (report["original_caption"], report["edited_caption"]) == (ORIGINAL_CAPTION, EDITED_CAPTION)
    assert report["clip_model"] == str(renders["clip"])
    per_frame = report["per_frame"]
    assert per_frame["original"] == [f"{i}.png" for i in range(NUM_FRAMES)]
    assert per_frame["edited"] == [f"edit_{i:03d}.jpg" for i in range(NUM_FRAMES)]
    assert len(per_frame["direction_similarity"]) == NUM_FRAMES
    assert len(per_frame["direction_consistency"]) == NUM_FRAMES - 1
    values = [report["clip_direction_similarity"], report["clip_direction_consistency"]]
    assert all(-1.0 <= value <= 1.0 for value in values + per_frame["direction_similarity"])
    assert all(-1.0 <= value <= 1.0 for value in per_frame["direction_consistency"])

    embedder = ClipEmbedder.load(str(renders["clip"]))
    original = embedder.embed_frames(load_frames(renders["original"], "--original"), batch_size=NUM_FRAMES)
    edited = embedder.embed_frames(load_frames(renders["edited"], "--edited"), batch_size=NUM_FRAMES)
    original_text, edited_text = embedder.embed_texts([ORIGINAL_CAPTION, EDITED_CAPTION])
    similarity = text_image_direction_similarity(original, edited, original_text, edited_text)
    consistency = direction_consistency(original, edited)
    assert per_frame["direction_similarity"] == pytest.approx(similarity.tolist(), abs=1e-5)
    assert per_frame["direction_consistency"] == pytest.approx(consistency.tolist(), abs=1e-5)
    assert report["clip_direction_similarity"] == pytest.approx(similarity.mean().item(), abs=1e-5)
    assert report["clip_direction_consistency"] == pytest.approx(consistency.mean().item(), abs=1e-5)


def assert_fails_with(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    message = flat(result.stderr)
    assert message.startswith("in2n: error: ")
    for fragment in fragments:
        assert fragment in message


@pytest.mark.e2e
def test_cli_rejects_renders_with_different_frame_counts(renders: Dict[str, Path], tmp_path: Path) -> None:
    shorter = write_frames(tmp_path / "shorter", [f"{i:05d}.png" for i in range(NUM_FRAMES - 1)], 1, np.ones(3))
    result = in2n_eval(
        "--original", renders["original"], "--edited", shorter, *captions(), "--clip-model", renders["clip"],
        hf_home=tmp_path / "hf",
    )  # fmt: skip
    assert_fails_with(
        result,
        f"--original has {NUM_FRAMES} frames ({renders['original']}) but --edited has {NUM_FRAMES - 1} ({shorter})",
        "render both along the same camera path",
    )


@pytest.mark.e2e
def test_cli_names_a_missing_folder(renders: Dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "renders" / "edited"
    result = in2n_eval(
        "--original", renders["original"], "--edited", missing, *captions(), "--clip-model", renders["clip"],
        hf_home=tmp_path / "hf",
    )  # fmt: skip
    assert_fails_with(result, f"--edited {missing}: no such folder or file. Check the path")


@pytest.mark.e2e
def test_cli_explains_how_to_get_missing_weights_offline(renders: Dict[str, Path], tmp_path: Path) -> None:
    hf_home = tmp_path / "empty_hf_home"
    hf_home.mkdir()
    result = in2n_eval(
        "--original", renders["original"], "--edited", renders["edited"], *captions(),
        "--clip-model", "openai/clip-vit-large-patch14", hf_home=hf_home,
    )  # fmt: skip
    assert_fails_with(
        result,
        "--clip-model openai/clip-vit-large-patch14: could not load the CLIP model weights",
        f"Hugging Face cache (HF_HOME={hf_home}, HF_HUB_OFFLINE=1 so nothing is downloaded)",
        "hf download openai/clip-vit-large-patch14",
        "or give a folder saved with `CLIPModel.save_pretrained(...)`",
    )


def test_folders_without_frames_and_bad_models_are_explained(renders: Dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a frame")
    with pytest.raises(In2nError, match="holds no frames"):
        load_frames(tmp_path, "--original")
    with pytest.raises(In2nError, match="holds no config.json, so it is not a saved CLIP model"):
        ClipEmbedder.load(str(tmp_path))
    with pytest.raises(In2nError, match="no such folder"):
        ClipEmbedder.load(str(tmp_path / "models" / "clip"))


def test_video_frames_are_read_in_order(tmp_path: Path) -> None:
    import imageio.v3 as iio

    frames = np.zeros((5, 32, 48, 3), dtype=np.uint8)
    for index in range(5):
        frames[index, :, 8 * index : 8 * index + 8] = 255
    iio.imwrite(tmp_path / "render.mp4", frames, plugin="pyav", codec="libx264", fps=10)

    video = load_frames(tmp_path / "render.mp4", "--original")

    assert video.names == [f"render.mp4[{i}]" for i in range(5)]
    bright_columns = [int(np.argmax(np.asarray(video.load(i)).mean(axis=(0, 2)))) for i in range(5)]
    assert [column // 8 for column in bright_columns] == list(range(5))


def test_undecodable_video_is_explained(tmp_path: Path) -> None:
    (tmp_path / "render.mp4").write_text("not a video")
    with pytest.raises(In2nError) as caught:
        load_frames(tmp_path / "render.mp4", "--edited")
    message = str(caught.value)
    assert "the video could not be decoded" in message and "pass folders of frames instead" in message
