"""A training step in micro-batches (--pipeline.ray-chunks): the same losses and gradients as the whole step."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List

import pytest
import torch
from nerfstudio.model_components.ray_samplers import Sampler

from in2n.errors import In2nError
from in2n.method_configs import in2n, in2n_big, in2n_lite
from in2n.ray_chunks import accumulate, automatic_chunks, chunk_slices
from tests.pipelines import pipeline_config


def test_the_variants_train_in_parts_of_at_most_4096_rays_unless_told_otherwise() -> None:
    assert [automatic_chunks(rays, patch) for rays, patch in ((16384, 1024), (1024, 1024), (4096, 1), (8192, 1))] == [
        4, 1, 1, 2,
    ]  # fmt: skip
    assert automatic_chunks(20 * 1024, 1024) == 5 and automatic_chunks(2048, 2048) == 1
    assert in2n.config.pipeline.micro_batches() == in2n_big.config.pipeline.micro_batches() == 4
    assert in2n_lite.config.pipeline.micro_batches() == 1
    config = copy.deepcopy(in2n.config.pipeline)
    config.ray_chunks = 2
    assert config.micro_batches() == 2


def test_parts_are_equal_and_made_of_whole_patches() -> None:
    assert chunk_slices(8 * 16, 4, 16) == [slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 128)]
    for rays, chunks in ((8 * 16, 3), (8 * 16 + 4, 2)):
        with pytest.raises(ValueError, match="do not split"):
            chunk_slices(rays, chunks, 16)


def test_accumulated_gradients_equal_the_whole_steps_and_each_loss_counts_once() -> None:
    weight = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    inputs = torch.arange(24.0).view(8, 3) / 10

    def losses(part: slice) -> Dict[str, torch.Tensor]:
        predicted = inputs[part] @ weight
        # A mean over the rays, and a term of the whole step (like the camera optimiser's regulariser).
        return {"rgb": (predicted**2).mean(), "regulariser": weight.abs().sum()}

    whole = losses(slice(0, 8))
    sum(whole.values()).backward()
    expected = weight.grad.clone()
    weight.grad = None
    backwards: List[float] = []

    def backward(loss: torch.Tensor) -> None:
        backwards.append(float(loss))
        loss.backward()

    _, combined, metrics = accumulate(chunk_slices(8, 4, 1), lambda part: ({}, losses(part), {"n": 1.0}), backward)
    assert len(backwards) == 3, "the last part is left to the trainer's backward"
    sum(combined.values()).backward()
    torch.testing.assert_close(weight.grad, expected)
    for key in whole:
        torch.testing.assert_close(combined[key], whole[key])
    assert metrics == {"n": 1.0}


def deterministic(pipeline):
    """No random jitter of the ray samples: the same rays give the same samples, chunked or not."""
    for module in pipeline.model.modules():
        if isinstance(module, Sampler):
            module.train_stratified = False
    return pipeline


def train(chunks: int, scene: Path, steps: int, scaler: bool) -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaler else None
    config = pipeline_config(scene, ray_chunks=chunks, editor="negative", edit_rate=1000)
    config.datamanager.train_num_rays_per_batch = 4096  # four 32x32 LPIPS patches
    pipeline = deterministic(config.setup(device="cpu", test_mode="val", grad_scaler=grad_scaler))
    pipeline.train()
    parameters = [p for group in pipeline.get_param_groups().values() for p in group]
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    torch.manual_seed(1)  # the rays each step samples
    losses = []
    for step in range(1, steps + 1):
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        loss = sum(loss_dict.values())
        losses.append({k: float(v) for k, v in loss_dict.items()})
        if grad_scaler is None:
            loss.backward()
            optimizer.step()
        else:
            grad_scaler.scale(loss).backward()
            grad_scaler.step(optimizer)
            grad_scaler.update()
        optimizer.zero_grad()
    return {"losses": losses, **{name: p.detach().clone() for name, p in pipeline.model.named_parameters()}}


@pytest.mark.parametrize("scaler", [False, True])
def test_a_chunked_step_trains_the_model_as_the_whole_step_does(scene: Path, scaler: bool) -> None:
    whole, chunked = train(1, scene, steps=3, scaler=scaler), train(4, scene, steps=3, scaler=scaler)
    for step_whole, step_chunked in zip(whole.pop("losses"), chunked.pop("losses"), strict=True):
        assert set(step_whole) == set(step_chunked) >= {"rgb_loss", "lpips_loss"}
        for key, value in step_whole.items():
            assert step_chunked[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, value in whole.items():
        torch.testing.assert_close(chunked[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_chunks_that_do_not_divide_the_patches_are_refused(scene: Path) -> None:
    # 1024 rays in 32x32 patches: one patch a step.
    with pytest.raises(In2nError, match="--pipeline.ray-chunks 2 does not divide a step's 1 32x32 patches"):
        pipeline_config(scene, ray_chunks=2).check()
    lite = pipeline_config(scene, lite=True, ray_chunks=3)  # single rays
    lite.datamanager.train_num_rays_per_batch = 4
    with pytest.raises(In2nError, match="does not divide a step's 4 rays into equal parts; use one of 1, 2, 4"):
        lite.check()
    with pytest.raises(In2nError, match="--pipeline.ray-chunks is 0"):
        pipeline_config(scene, ray_chunks=0).check()
