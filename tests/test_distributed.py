"""The pieces of a run on several devices that need no second process: how edits and steps are shared out, the
checks of the options, the checkpoint's keys and the message of a process that failed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from in2n.dataset_update.background import EditRequest
from in2n.dataset_update.loop import EditLoop
from in2n.dataset_update.state import EditState
from in2n.distributed import (
    Ranks,
    SharedControls,
    device_problems,
    failure_message,
    merge_edits,
    single_device_state,
    split_edit,
    step_seed,
)
from in2n.editors.base import EditSettings
from in2n.editors.negative import NegativeEditor
from in2n.runs.checkpoints import atomic_save
from in2n.splat.pipeline import In2nSplatPipelineConfig
from tests.test_edit_loop import make_loop


def ranks(rank: int, world_size: int = 2) -> Ranks:
    return Ranks(rank, world_size, group=None)


def request(views, step: int = 3) -> EditRequest:
    count = len(views)
    return EditRequest(
        step=step,
        views=list(views),
        renders=torch.rand(count, 3, 4, 5),
        originals=torch.rand(count, 3, 4, 5),
        prompt="p",
        settings=EditSettings(),
        seeds=[100 + v for v in views],
        passes=[0] * count,
        noise_levels=[10 * v for v in views],
    )


def test_each_rank_edits_its_consecutive_share_of_each_batch() -> None:
    groups = [[4, 7, 1], [9], [2, 5, 6, 8]]
    assert ranks(0).mine(groups) == [[4, 7], [9], [2, 5]]
    assert ranks(1).mine(groups) == [[1], [6, 8]]
    shares = [ranks(r, 3).mine(groups) for r in range(3)]
    assert sorted(v for share in shares for batch in share for v in batch) == sorted(v for g in groups for v in g)


def test_split_and_merged_edits_are_the_batch_one_process_edits() -> None:
    whole = request([4, 7, 1])
    edited = torch.rand(3, 3, 4, 5)
    pieces = split_edit(whole, edited)
    assert [p[0].views for p in pieces] == [[4], [7], [1]]
    merged, merged_edited = merge_edits(pieces)
    assert merged.views == whole.views and merged.seeds == whole.seeds and merged.noise_levels == whole.noise_levels
    assert torch.equal(merged.renders, whole.renders) and torch.equal(merged.originals, whole.originals)
    assert torch.equal(merged_edited, edited)
    assert merged.masks is None


def test_every_rank_samples_the_same_rays_and_its_own_jitter() -> None:
    assert step_seed(0, 5) == step_seed(0, 5)
    assert len({step_seed(0, 5), step_seed(0, 6), step_seed(1, 5), step_seed(0, 5, 1)}) == 4


def test_a_checkpoint_holds_the_model_without_ddps_prefix(tmp_path: Path) -> None:
    state = {"_model.module.field.weight": torch.ones(1), "_model.other": torch.zeros(1), "panel": 1}
    assert single_device_state(state).keys() == {"_model.field.weight", "_model.other", "panel"}


def pipeline_options(**changes) -> SimpleNamespace:
    options = dict(
        datamanager=SimpleNamespace(patch_size=32, train_num_rays_per_batch=16384),
        ray_chunks=None,
        concurrent_edits="auto",
        ip2p_device=None,
    )
    return SimpleNamespace(**{**options, **changes})


def test_options_a_run_on_several_devices_cannot_use_say_what_to_change() -> None:
    assert device_problems(pipeline_options(), 2) == []
    assert device_problems(pipeline_options(concurrent_edits="on"), 1) == []
    odd_patches = pipeline_options(datamanager=SimpleNamespace(patch_size=32, train_num_rays_per_batch=3 * 1024))
    (problem,) = device_problems(odd_patches, 2)
    assert "train-num-rays-per-batch 3072 gives 3" in problem and "multiple of 2048 rays" in problem
    problems = device_problems(pipeline_options(ray_chunks=3, concurrent_edits="on", ip2p_device="cuda:1"), 2)
    assert len(problems) == 3
    assert "--pipeline.ray-chunks 3" in problems[0] and "multiple of 2" in problems[0]
    assert "--pipeline.concurrent-edits auto or off" in problems[1]
    assert "Leave --pipeline.ip2p-device out" in problems[2]


def test_a_process_that_raised_an_in2n_error_is_shown_by_its_message(tmp_path: Path) -> None:
    (tmp_path / "process-1.txt").write_text("the scene has no views", "utf8")
    error = ProcessRaisedException("Traceback ...", error_index=1, error_pid=123)
    assert failure_message(error, 2, tmp_path / "none", tmp_path) == "in2n: error: the scene has no views"


def test_a_process_that_crashed_or_was_killed_is_one_message_with_what_is_on_disk(tmp_path: Path) -> None:
    models = tmp_path / "nerfstudio_models"
    models.mkdir()
    raised = ProcessRaisedException(
        "\n\n-- Process 0 terminated with the following error:\nTraceback ...\nRuntimeError: boom\n", 0, 1
    )
    message = failure_message(raised, 2, models, tmp_path)
    assert message is not None
    message = " ".join(message.split())
    assert "process 0 of the 2 (rank 0) failed" in message and "RuntimeError: boom" in message
    assert "saved no checkpoint yet: run the command again to start over" in message
    atomic_save({"step": 7}, models / "step-000000007.ckpt", scratch_dir=tmp_path)
    killed = failure_message(
        ProcessExitedException("killed", 1, 2, exit_code=-9, signal_name="SIGKILL"), 2, models, tmp_path
    )
    assert killed is not None
    killed = " ".join(killed.split())  # as printed, wrapped at 100 columns
    assert "process 1 of the 2 (rank 1) was killed by SIGKILL" in killed
    assert "step-000000007.ckpt (step 7), is complete" in killed and f"--load-dir {models}" in killed
    assert failure_message(ValueError("other"), 2, models, tmp_path) is None


def test_a_process_that_exited_says_its_status(tmp_path: Path) -> None:
    message = failure_message(ProcessExitedException("exited", 1, 2, exit_code=3), 2, tmp_path, tmp_path)
    assert message is not None and "exited with status 3" in message


def edit_in_process(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    """One of `world_size` processes editing make_loop's views together: two steps of edits, a step paused from
    rank 0's controls (where the viewer is), then Reset and one more step. Leaves its training images in out_dir."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        loop = make_loop(NegativeEditor(), edit_count=3)
        ranks = Ranks(rank, world_size, group=None)
        loop.share = ranks
        ranks.controls = SharedControls(loop.live)  # what the viewer panel writes into
        drive(loop, ranks.controls)
        torch.save({"rows": loop.images.rows, "state": loop.edit_state().to_dict()}, Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def drive(loop: EditLoop, controls) -> None:
    loop.before_step(0)
    loop.before_step(1)
    controls.live.paused = True
    controls.live.prompt = "from the viewer"
    loop.before_step(2)
    controls.live.paused = False
    controls.request_reset()
    loop.before_step(3)
    loop.before_step(4)


@pytest.mark.e2e
def test_two_processes_share_out_the_edits_and_apply_the_viewers_settings_together(tmp_path: Path) -> None:
    mp.spawn(edit_in_process, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    alone = make_loop(NegativeEditor(), edit_count=3)
    drive(alone, alone)
    expected = alone.edit_state()
    assert expected.prompt == "from the viewer" and alone.schedule.views_edited == 6
    for rank in range(2):
        saved = torch.load(tmp_path / f"{rank}.pt")
        assert torch.equal(saved["rows"], alone.images.rows), f"rank {rank} trains on other images"
        state = EditState.from_dict(saved["state"])
        assert state.prompt == "from the viewer" and state.schedule == expected.schedule
        assert state.edited_views == expected.edited_views
        assert repr(state.progress) == repr(expected.progress)  # the records hold NaN (no perceptual distance)


def test_the_splat_edit_is_refused_on_several_devices() -> None:
    splats = In2nSplatPipelineConfig()
    assert device_problems(splats, 1) == []
    (problem,) = device_problems(splats, 2)
    assert problem.startswith("--machine.num-devices 2: the splat edit trains on one device")
    assert "Leave --machine.num-devices at 1" in problem
