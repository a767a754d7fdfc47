"""A training step in micro-batches (--pipeline.ray-chunks): the same losses and gradients as the whole step."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.ray_samplers import Sampler

from in2n.errors import In2nError
from in2n.method_configs import in2n, in2n_big, in2n_lite
from in2n.ray_chunks import accumulate, automatic_chunks, chunk_slices
from in2n.runs.checkpoints import find_checkpoint, load_checkpoint_file
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


FIRST_STEP = 1000
"""Steps are numbered from here, as in an edit of a trained nerfacto: its proposal networks then train every other
step (below step 10 they train at every step), so steps that train them and steps that do not both come up."""


def train(chunks: int, scene: Path, nerfacto_run: Path, steps: int, scaler: bool) -> Dict[str, Any]:
    """Continue training the nerfacto run for `steps` steps in `chunks` micro-batches; each step's losses and
    gradients, and the parameters after. (An untrained nerfacto gives its proposal networks no gradient: their
    loss only counts where they fall short of the NeRF's weights.)"""
    torch.manual_seed(0)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaler else None
    config = pipeline_config(scene, ray_chunks=chunks, editor="negative", edit_rate=1000)
    config.datamanager.train_num_rays_per_batch = 4096  # four 32x32 LPIPS patches
    pipeline = deterministic(config.setup(device="cpu", test_mode="val", grad_scaler=grad_scaler))
    state = load_checkpoint_file(find_checkpoint(nerfacto_run, None, None))
    pipeline.load_pipeline(state["pipeline"], state["step"])
    pipeline.train()
    parameters = [p for group in pipeline.get_param_groups().values() for p in group]
    # SGD: a step is linear in the gradient, so the parameters agree as closely as the gradients do. (Adam moves a
    # parameter by about its learning rate whatever the gradient's size, so gradients equal to rounding but of
    # opposite sign, on hash entries barely touched, move it apart by twice that.)
    optimizer = torch.optim.SGD(parameters, lr=1e-3)
    torch.manual_seed(1)  # the rays each step samples
    callbacks = pipeline.get_training_callbacks(TrainingCallbackAttributes(None, grad_scaler, pipeline, None))
    losses, gradients = [], []
    for step in range(FIRST_STEP, FIRST_STEP + steps):
        run_callbacks(callbacks, step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        loss = sum(loss_dict.values())
        losses.append({k: float(v) for k, v in loss_dict.items()})
        (loss if grad_scaler is None else grad_scaler.scale(loss)).backward()
        gradients.append(
            {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in pipeline.model.named_parameters()}
        )
        if grad_scaler is None:
            optimizer.step()
        else:
            grad_scaler.step(optimizer)
            grad_scaler.update()
        optimizer.zero_grad()
        run_callbacks(callbacks, step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
    parameters_after = {name: p.detach().clone() for name, p in pipeline.model.named_parameters()}
    return {"losses": losses, "gradients": gradients, "parameters": parameters_after}


def run_callbacks(callbacks: List[TrainingCallback], step: int, location: TrainingCallbackLocation) -> None:
    """The pipeline's callbacks as the trainer runs them: nerfacto's anneal before a step, its proposal schedule
    after it."""
    for callback in callbacks:
        callback.run_callback_at_location(step, location)


@pytest.mark.e2e
@pytest.mark.parametrize("scaler", [False, True])
def test_a_chunked_step_trains_the_model_as_the_whole_step_does(scene: Path, nerfacto_run: Path, scaler: bool) -> None:
    # The sampler trains the proposal networks at its first call (step 1000), then every other step: 1002, not 1001.
    whole, chunked = (train(chunks, scene, nerfacto_run, steps=3, scaler=scaler) for chunks in (1, 4))
    for step_whole, step_chunked in zip(whole["losses"], chunked["losses"], strict=True):
        assert set(step_whole) == set(step_chunked) >= {"rgb_loss", "lpips_loss"}
        for key, value in step_whole.items():
            assert step_chunked[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    proposal_trained = []
    for step, (grads_whole, grads_chunked) in enumerate(zip(whole["gradients"], chunked["gradients"], strict=True)):
        for name, grad in ((n, g) for n, g in grads_whole.items() if g.numel()):
            # Sums over the rays in another order: equal to float rounding, relative to the tensor's largest entry. From
            # the second step on, the two models also differ by the rounding of the steps before, which the network
            # amplifies (measured up to 1.3e-4 of the largest entry at the third step): ten times the margin there.
            tolerance = (1e-4 if step == 0 else 1e-3) * float(grad.abs().max()) + 1e-12
            assert float((grads_chunked[name] - grad).abs().max()) <= tolerance, (FIRST_STEP + step, name)
        proposal_trained.append(any(bool((g != 0).any()) for n, g in grads_whole.items() if n.startswith("proposal")))
    assert proposal_trained == [True, False, True], "nerfacto's proposal schedule at these steps"
    for name, value in whole["parameters"].items():
        torch.testing.assert_close(chunked["parameters"][name], value, rtol=1e-4, atol=1e-5, msg=name)


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
