"""in2n-export: an in2n run's edited views as a nerfstudio dataset that any method trains on."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import yaml
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from PIL import Image

from in2n.dataset_update.state import EDIT_STATE_KEY, EditState
from in2n.errors import In2nError
from in2n.method_configs import in2n_big
from in2n.synthetic.cpu_preset import CPU_TRAINER_ARGS, SMALL_MODEL_ARGS
from in2n.tools.export_dataset import (
    ExportEditedDataset,
    relative_path,
    scaled_intrinsics,
    stored_file,
    write_atomically,
)
from tests.conftest import SCENE, ns, run

STEP = 310
EDITED_VIEWS = [0, 4, 7]


def train_files(data: Path, **parser_options) -> List[Path]:
    return list(NerfstudioDataParserConfig(data=data, **parser_options).setup().get_dataparser_outputs("train")
                .image_filenames)  # fmt: skip


def read_uint8(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())


def write_run(run_dir: Path, data: Path, edited: Dict[int, torch.Tensor], num_views: int, **parser_options) -> Path:
    """An in2n run folder as training leaves it (config.yml, a checkpoint with an edit state); returns config.yml."""
    config = copy.deepcopy(in2n_big.config)
    config.pipeline.datamanager.data = data
    for key, value in parser_options.items():
        setattr(config.pipeline.datamanager.dataparser, key, value)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yml").write_text(yaml.dump(config))
    size = tuple(next(iter(edited.values())).shape[:2]) if edited else (SCENE.height, SCENE.width)
    edit = EditState(
        prompt="make it gold", start_step=1, image_sizes=[size] * num_views, schedule={}, edited_images=edited
    )
    state = {"step": STEP, "pipeline": {}, EDIT_STATE_KEY: edit.to_dict()}
    (run_dir / "nerfstudio_models").mkdir()
    torch.save(state, run_dir / "nerfstudio_models" / f"step-{STEP:09d}.ckpt")
    return run_dir / "config.yml"


def random_edits(height: int, width: int) -> Dict[int, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {v: torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=generator) for v in EDITED_VIEWS}


def test_edited_training_views_replace_their_images_and_everything_else_is_copied(scene: Path, tmp_path: Path):
    edits = random_edits(SCENE.height, SCENE.width)
    files = train_files(scene)
    config = write_run(tmp_path / "run", scene, edits, len(files))
    output = tmp_path / "edited"
    ExportEditedDataset(load_config=config, output_dir=output).main()
    assert json.loads((output / "transforms.json").read_text()) == json.loads((scene / "transforms.json").read_text())
    for view, path in enumerate(files):
        exported = read_uint8(output / path.relative_to(scene))
        assert torch.equal(exported, edits[view] if view in edits else read_uint8(path)), view
    eval_files = {p.name for p in (scene / "images").iterdir()} - {p.name for p in files}
    assert eval_files and all(
        (output / "images" / name).read_bytes() == (scene / "images" / name).read_bytes() for name in eval_files
    )
    assert train_files(output) == [output / p.relative_to(scene) for p in files], "the same training views"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial folder left behind"


@pytest.fixture
def downscaled_jpg_scene(scene: Path, tmp_path: Path) -> Path:
    """The scene as JPGs, with half-size copies in images_2/ and masks (full and half size) for every frame."""
    data = tmp_path / "jpg-scene"
    transforms = json.loads((scene / "transforms.json").read_text())
    for folder in ("images", "images_2", "masks", "masks_2"):
        (data / folder).mkdir(parents=True)
    for frame in transforms["frames"]:
        image = Image.open(scene / frame["file_path"]).convert("RGB")
        name = Path(frame["file_path"]).with_suffix(".jpg").name
        image.save(data / "images" / name)
        image.resize((SCENE.width // 2, SCENE.height // 2)).save(data / "images_2" / name)
        mask = Image.fromarray(np.full((SCENE.height, SCENE.width), 255, dtype=np.uint8))
        mask.save(data / "masks" / name.replace(".jpg", ".png"))
        mask.resize((SCENE.width // 2, SCENE.height // 2)).save(data / "masks_2" / name.replace(".jpg", ".png"))
        frame["file_path"] = f"images/{name}"
        frame["mask_path"] = f"masks/{name.replace('.jpg', '.png')}"
    (data / "transforms.json").write_text(json.dumps(transforms))
    shutil.copy(scene / transforms["ply_file_path"], data / transforms["ply_file_path"])  # splatfacto's points
    return data


def test_a_downscaled_run_exports_at_its_resolution_with_scaled_intrinsics(downscaled_jpg_scene: Path, tmp_path):
    data = downscaled_jpg_scene
    edits = random_edits(SCENE.height // 2, SCENE.width // 2)
    files = train_files(data, downscale_factor=2)
    config = write_run(tmp_path / "run", data, edits, len(files), downscale_factor=2)
    output = tmp_path / "edited"
    ExportEditedDataset(load_config=config, output_dir=output).main()
    source, exported = (json.loads((d / "transforms.json").read_text()) for d in (data, output))
    assert (exported["w"], exported["h"]) == (SCENE.width // 2, SCENE.height // 2)
    assert exported["fl_x"] == pytest.approx(source["fl_x"] / 2) and exported["cx"] == pytest.approx(source["cx"] / 2)
    exported_files = train_files(output)
    assert len(exported_files) == len(files)
    for view, path in enumerate(exported_files):
        if view in edits:
            assert path.suffix == ".png" and torch.equal(read_uint8(path), edits[view]), view
        else:
            assert path.suffix == ".jpg" and path.read_bytes() == files[view].read_bytes(), view
    for frame in exported["frames"]:
        assert Image.open(output / frame["mask_path"]).size == (SCENE.width // 2, SCENE.height // 2)
    assert not (output / "images_2").exists(), "the export is read at downscale factor 1"


def test_split_lists_follow_renamed_frames(downscaled_jpg_scene: Path, tmp_path: Path):
    data = downscaled_jpg_scene
    transforms = json.loads((data / "transforms.json").read_text())
    names = sorted(frame["file_path"] for frame in transforms["frames"])
    transforms["train_filenames"], transforms["val_filenames"] = names[:-2], names[-2:]
    transforms["test_filenames"] = names[-2:]
    (data / "transforms.json").write_text(json.dumps(transforms))
    edits = random_edits(SCENE.height, SCENE.width)
    config = write_run(tmp_path / "run", data, edits, len(train_files(data)), downscale_factor=1)
    ExportEditedDataset(load_config=config, output_dir=tmp_path / "edited").main()
    exported = json.loads((tmp_path / "edited" / "transforms.json").read_text())
    assert sum(name.endswith(".png") for name in exported["train_filenames"]) == len(EDITED_VIEWS)
    assert exported["val_filenames"] == names[-2:]
    assert len(train_files(tmp_path / "edited")) == len(names) - 2


def test_runs_that_cannot_be_exported_are_refused_with_a_reason(scene: Path, tmp_path: Path):
    num_views = len(train_files(scene))
    nerfacto = write_run(tmp_path / "nerfacto", scene, {}, num_views)
    state = torch.load(tmp_path / "nerfacto" / "nerfstudio_models" / f"step-{STEP:09d}.ckpt", weights_only=True)
    del state[EDIT_STATE_KEY]
    torch.save(state, tmp_path / "nerfacto" / "nerfstudio_models" / f"step-{STEP:09d}.ckpt")
    empty = write_run(tmp_path / "empty", scene, {}, num_views)
    fewer = write_run(tmp_path / "fewer", scene, random_edits(SCENE.height, SCENE.width), num_views - 1)
    smaller = write_run(tmp_path / "smaller", scene, random_edits(10, 12), num_views)
    unsaved = write_run(tmp_path / "unsaved", scene, random_edits(SCENE.height, SCENE.width), num_views)
    shutil.rmtree(tmp_path / "unsaved" / "nerfstudio_models")
    cases = [
        (nerfacto, {}, "its checkpoints hold no edit"),
        (empty, {}, "holds no edited view yet"),
        (fewer, {}, f"the run edited {num_views - 1} training views, but its dataset now gives {num_views}"),
        (smaller, {}, "was edited at 12x10 pixels, but the dataset gives 64x48"),
        (unsaved, {}, "holds no checkpoint"),
        (fewer, {"data": tmp_path / "moved"}, "is not there"),
        (tmp_path / "missing.yml", {}, "--load-config"),
    ]
    for config, options, message in cases:
        with pytest.raises(In2nError, match=message):
            ExportEditedDataset(load_config=config, output_dir=tmp_path / "out", **options).main()
    assert not (tmp_path / "out").exists()


def test_the_output_folder_is_only_replaced_when_asked(scene: Path, tmp_path: Path):
    config = write_run(tmp_path / "run", scene, random_edits(SCENE.height, SCENE.width), len(train_files(scene)))
    output = tmp_path / "edited"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(In2nError, match="is not empty"):
        ExportEditedDataset(load_config=config, output_dir=output).main()
    assert (output / "keep.txt").exists()
    ExportEditedDataset(load_config=config, output_dir=output, overwrite=True).main()
    assert (output / "transforms.json").exists() and not (output / "keep.txt").exists()
    for protected in (scene, tmp_path / "run", tmp_path):
        with pytest.raises(In2nError, match="which the export reads"):
            ExportEditedDataset(load_config=config, output_dir=protected, overwrite=True).main()
    with pytest.raises(In2nError, match="is a file"):
        ExportEditedDataset(load_config=config, output_dir=output / "transforms.json").main()


def test_an_interrupted_export_leaves_the_output_untouched(tmp_path: Path):
    def fail_halfway(folder: Path) -> None:
        (folder / "transforms.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "edited", fail_halfway)
    assert list(tmp_path.iterdir()) == []


def test_paths_and_intrinsics() -> None:
    assert stored_file(Path("d"), "images/a.jpg", 1, "images_") == Path("d/images/a.jpg")
    assert stored_file(Path("d"), "masks/a.png", 4, "masks_") == Path("d/masks_4/a.png")
    for outside in ("/abs/a.png", "../a.png", "images/../../a.png"):
        with pytest.raises(In2nError, match="outside the dataset folder"):
            relative_path(outside)
    transforms = {"fl_x": 100, "cx": 31.5, "w": 63, "h": 48, "frames": [{"fl_y": 90.0, "file_path": "a.png"}]}
    half = scaled_intrinsics(transforms, 0.5)
    assert half == {"fl_x": 50.0, "cx": 15.75, "w": 31, "h": 24, "frames": [{"fl_y": 45.0, "file_path": "a.png"}]}
    assert transforms["fl_x"] == 100 and scaled_intrinsics(transforms, 1.0) == transforms


@pytest.mark.e2e
def test_export_of_a_negative_edit_trains_with_nerfacto(negative_run: Path, nerfacto_run: Path, scene: Path,
                                                         workdir: Path):  # fmt: skip
    output = workdir / "exported"
    run([ns("in2n-export"), "--load-config", negative_run / "config.yml", "--output-dir", output], cwd=workdir)
    checkpoint = max((negative_run / "nerfstudio_models").glob("step-*.ckpt"))
    edit = torch.load(checkpoint, weights_only=True)["in2n"]
    assert edit["edited_views"], "the negative run edited views"
    edited = dict(zip(edit["edited_views"], edit["edited_images"], strict=True))
    files = train_files(scene)
    for view, path in enumerate(files):
        expected = edited[view] if view in edited else read_uint8(path)
        assert torch.equal(read_uint8(output / path.relative_to(scene)), expected), view
    assert len(json.loads((output / "transforms.json").read_text())["frames"]) == SCENE.num_views
    refused = run([ns("in2n-export"), "--load-config", nerfacto_run.parent / "config.yml",
                   "--output-dir", workdir / "not-exported"], cwd=workdir, check=False)  # fmt: skip
    assert refused.returncode != 0 and "in2n: error:" in refused.stderr and "Traceback" not in refused.stderr
    assert "its checkpoints hold no edit" in " ".join(refused.stderr.split())
    run([ns("ns-train"), "nerfacto", *CPU_TRAINER_ARGS, *SMALL_MODEL_ARGS, "--vis", "tensorboard",
         "--max-num-iterations", "2", "--pipeline.datamanager.train-num-rays-per-batch", "256",
         "--output-dir", workdir / "outputs", "--experiment-name", "exported", "--timestamp", "nerfacto",
         "nerfstudio-data", "--data", output], cwd=workdir)  # fmt: skip
    assert list((workdir / "outputs" / "exported" / "nerfacto" / "nerfacto" / "nerfstudio_models").glob("*.ckpt"))
