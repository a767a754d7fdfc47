"""Tests of the offline stand-ins: procedural scene, random InstructPix2Pix and random LPIPS backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from in2n.model import ALEXNET_FILE
from in2n.synthetic.ip2p import SD15_SHAPES, build_random_ip2p, save_random_ip2p
from in2n.synthetic.lpips_backbone import write_random_alexnet
from in2n.synthetic.scene import SceneConfig, surface_points, write_scene

SDXL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _images(transforms_path: Path) -> list:
    frames = json.loads(transforms_path.read_text())["frames"]
    return [np.asarray(Image.open(transforms_path.parent / frame["file_path"])) for frame in frames]


def test_scene_has_one_image_per_camera_at_the_radius_looking_at_the_origin(tmp_path: Path) -> None:
    config = SceneConfig(num_views=6, width=40, height=30, radius=2.5)
    transforms_path = write_scene(tmp_path, config)

    transforms = json.loads(transforms_path.read_text())
    assert transforms_path == tmp_path / "transforms.json"
    assert (transforms["camera_model"], transforms["w"], transforms["h"]) == ("OPENCV", 40, 30)
    assert len(transforms["frames"]) == 6
    for frame in transforms["frames"]:
        camera_to_world = np.array(frame["transform_matrix"])
        rotation, centre = camera_to_world[:3, :3], camera_to_world[:3, 3]
        np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-9)
        assert np.linalg.norm(centre) == pytest.approx(2.5)
        # OpenGL cameras look down -Z, so -Z must point from the centre to the origin.
        np.testing.assert_allclose(-rotation[:, 2], -centre / np.linalg.norm(centre), atol=1e-9)
        assert centre[2] > 0.0
    images = _images(transforms_path)
    assert all(image.shape == (30, 40, 3) and image.dtype == np.uint8 for image in images)
    assert not np.array_equal(images[0], images[1])


def test_scene_overwrites_a_bigger_earlier_scene(tmp_path: Path) -> None:
    write_scene(tmp_path, SceneConfig(num_views=5))
    write_scene(tmp_path, SceneConfig(num_views=3, seed=1))
    assert len(json.loads((tmp_path / "transforms.json").read_text())["frames"]) == 3
    assert len(list((tmp_path / "images").iterdir())) == 3


def test_scene_is_deterministic_under_seed(tmp_path: Path) -> None:
    first = _images(write_scene(tmp_path / "a", SceneConfig(num_views=2, seed=3)))
    again = _images(write_scene(tmp_path / "b", SceneConfig(num_views=2, seed=3)))
    other = _images(write_scene(tmp_path / "c", SceneConfig(num_views=2, seed=4)))
    assert all(np.array_equal(image, same) for image, same in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_rgba_scene_has_transparent_background_and_opaque_objects(tmp_path: Path) -> None:
    images = _images(write_scene(tmp_path, SceneConfig(num_views=4, rgba=True)))
    for image in images:
        assert image.shape == (48, 64, 4)
        assert (image[..., 3] == 0).any() and (image[..., 3] == 255).any()


def test_scene_loads_with_the_nerfstudio_dataparser(tmp_path: Path) -> None:
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    write_scene(tmp_path, SceneConfig(num_views=10))
    parser = NerfstudioDataParserConfig(data=tmp_path).setup()
    train, val = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("val")
    assert len(train.image_filenames) + len(val.image_filenames) == 10
    assert (int(train.cameras.width[0]), int(train.cameras.height[0])) == (64, 48)


def test_depth_scene_gives_each_pixel_the_depth_of_what_it_sees(tmp_path: Path) -> None:
    """16-bit millimetres along the camera axis, 0 on the sky, as nerfstudio's depth datasets read them."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    config = SceneConfig(num_views=3, depth=True)
    frames = json.loads(write_scene(tmp_path, config).read_text())["frames"]
    for frame in frames:
        depth = np.asarray(Image.open(tmp_path / frame["depth_file_path"])).astype(np.float64) / 1000.0
        camera_to_world = np.array(frame["transform_matrix"])
        points = surface_points(config, camera_to_world)
        sky = ~np.isfinite(points).all(axis=-1)
        assert sky.any() and (depth[sky] == 0).all()
        # The centre pixel looks along the axis: its depth is its distance. Cameras are 3 units from the origin.
        centre = points[config.height // 2, config.width // 2] - camera_to_world[:3, 3]
        assert depth[config.height // 2, config.width // 2] == pytest.approx(np.linalg.norm(centre), abs=0.02)
        assert 1.0 < depth[~sky].min() and depth[~sky].max() < 6.0
    outputs = NerfstudioDataParserConfig(data=tmp_path, train_split_fraction=1.0).setup().get_dataparser_outputs()
    assert len(outputs.metadata["depth_filenames"]) == 3


@pytest.fixture(scope="module")
def tiny_ip2p_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_ip2p(tmp_path_factory.mktemp("ip2p"), size="tiny", seed=0)


def test_tiny_ip2p_reloads_offline_and_edits_an_image(tiny_ip2p_folder: Path) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    assert (tiny_ip2p_folder / "model_index.json").exists()
    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_ip2p_folder, local_files_only=True)
    edited = pipeline("make it red", image=torch.rand(1, 3, 32, 32), num_inference_steps=2, output_type="pt").images
    assert edited.shape == (1, 3, 32, 32)
    assert torch.isfinite(edited).all() and edited.min() >= 0.0 and edited.max() <= 1.0


def test_tiny_ip2p_stays_finite_through_twenty_ddim_steps(tiny_ip2p_folder: Path) -> None:
    from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

    pipeline = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_ip2p_folder, local_files_only=True)
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    # The real checkpoint's scheduler config turns DDIM's x0 clipping off; ours must too.
    assert not pipeline.scheduler.config.clip_sample
    latents = pipeline(
        "turn the spheres into cubes", image=torch.rand(1, 3, 32, 48), num_inference_steps=20, output_type="latent"
    ).images
    assert latents.shape == (1, 4, 16, 24)
    assert torch.isfinite(latents).all()
    assert torch.isfinite(pipeline.vae.decode(latents / pipeline.vae.config.scaling_factor).sample).all()


def test_tokenizer_handles_arbitrary_prompts() -> None:
    pipeline = build_random_ip2p("tiny")
    tokenizer = pipeline.tokenizer
    ids = tokenizer("Make it look like a Van Gogh painting, «très» jolie 🎨!", truncation=True).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert max(ids) < pipeline.text_encoder.config.vocab_size
    assert tokenizer.model_max_length == 77


def test_ip2p_weights_depend_only_on_seed() -> None:
    def weights(seed: int) -> dict:
        pipeline = build_random_ip2p("tiny", seed=seed)
        return {
            f"{name}.{key}": value
            for name in ("unet", "vae", "text_encoder")
            for key, value in getattr(pipeline, name).state_dict().items()
        }

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_ip2p_dtype() -> None:
    pipeline = build_random_ip2p("tiny", dtype=torch.float16)
    assert pipeline.unet.dtype == pipeline.vae.dtype == pipeline.text_encoder.dtype == torch.float16


def test_sd15_shapes_are_those_of_stable_diffusion_1_5() -> None:
    assert SD15_SHAPES.unet_block_out_channels == (320, 640, 1280, 1280)
    assert SD15_SHAPES.unet_layers_per_block == 2
    assert SD15_SHAPES.unet_attention_head_dim == 8
    assert SD15_SHAPES.vae_block_out_channels == (128, 256, 512, 512)
    assert (SD15_SHAPES.text.hidden_size, SD15_SHAPES.text.intermediate_size) == (768, 3072)
    assert (SD15_SHAPES.text.num_layers, SD15_SHAPES.text.num_heads) == (12, 12)
    assert (SD15_SHAPES.text.vocab_size, SD15_SHAPES.text.hidden_act) == (49408, "quick_gelu")
    assert SD15_SHAPES.text_2 is None


def test_sdxl_size_has_the_parameters_of_sdxl_instructpix2pix() -> None:
    """Built without memory (on the meta device): SDXL base's networks, its UNet with 8 input channels."""
    with torch.device("meta"):
        pipeline = build_random_ip2p("sdxl")
    counts = {name: sum(p.numel() for p in getattr(pipeline, name).parameters()) for name in SDXL_COMPONENTS}
    assert counts == {
        "unet": 2_567_463_684 + 4 * 320 * 3 * 3,  # SDXL's UNet, plus the conv_in weights of the 4 image channels
        "vae": 83_653_863,
        "text_encoder": 123_060_480,  # CLIP ViT-L/14
        "text_encoder_2": 694_659_840,  # OpenCLIP ViT-bigG/14 with projection
    }
    assert pipeline.unet.config.addition_embed_type == "text_time" and pipeline.vae.config.scaling_factor == 0.13025


def test_tiny_sdxl_reloads_offline_and_edits_an_image(tmp_path: Path) -> None:
    from diffusers import StableDiffusionXLInstructPix2PixPipeline

    folder = save_random_ip2p(tmp_path, size="tiny-sdxl", seed=0)
    pipeline = StableDiffusionXLInstructPix2PixPipeline.from_pretrained(folder, local_files_only=True)
    edited = pipeline(
        "make it red", image=torch.rand(1, 3, 32, 32), height=32, width=32, num_inference_steps=2, output_type="pt"
    ).images
    assert edited.shape == (1, 3, 32, 32)
    assert torch.isfinite(edited).all() and edited.min() >= 0.0 and edited.max() <= 1.0


def test_random_alexnet_lets_lpips_build_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    path = write_random_alexnet(tmp_path)
    assert path == tmp_path / "hub" / "checkpoints" / ALEXNET_FILE
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lpips = LearnedPerceptualImagePatchSimilarity(normalize=True)
    assert torch.isfinite(lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)))


def test_random_alexnet_keeps_an_existing_file(tmp_path: Path) -> None:
    path = write_random_alexnet(tmp_path, seed=0)
    written = path.read_bytes()
    assert write_random_alexnet(tmp_path, seed=1) == path
    assert path.read_bytes() == written
