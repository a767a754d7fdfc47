"""The benchmark (bench/, run by scripts/bench.py) on a tiny model: its results, its reference edit against ours, the
plan it makes per device, per-phase peak memory, the edit on one and on two processes, the report, and its command
line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import torch

from bench.cli import parse_args, split_train_args
from bench.compiled import COMPILE_WARM_UP_EDITS, measure_compiled
from bench.config import BenchConfig, BenchError, make_plan
from bench.edits import EDIT_COMPONENTS, call_sizes, unet_seconds
from bench.harness import as_json, run
from bench.memory import MemoryCounters, PeakTracker, PhaseMemory
from bench.profiling import Phases, ratios
from bench.reference_editor import ReferenceModeEditor
from bench.report import compiled_lines, convergence_lines, markdown, number, scaling_lines, training_lines
from bench.runs import RunFolders, in2n_args
from bench.scaling import edit_count_for, launch_problems_on
from bench.training import PhaseEditor
from bench.workers import run_measured
from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, EditLoopConfig, ViewRender
from in2n.editors.base import EditSettings
from in2n.editors.ip2p import InstructPix2PixEditor
from in2n.editors.negative import NegativeEditor
from tests.helpers import random_images

ROOT = Path(__file__).resolve().parents[1]
EDIT_KEYS = {
    "nerf_render",
    "vae_encode_render",
    "vae_encode_condition",
    "unet",
    "vae_decode",
    "other",
    "total",
    "unet_calls",
    "unet_view_passes",
    "derived",
}
POSITIVE_TIMES = ("nerf_render", "vae_encode_render", "unet", "vae_decode", "total")


@pytest.mark.parametrize("timed_passes", [1, 2], ids=["derived", "measured"])
def test_edit_measurements_write_ours_reference_their_ratios_and_memory(tmp_path: Path, timed_passes: int):
    config = BenchConfig(
        device="cpu", sizes=(64,), views=(1, 2), steps=2, timed_passes=timed_passes, model_size="tiny",
        output_dir=tmp_path, skip_training=True,
    )  # fmt: skip
    run(config)

    results = json.loads((tmp_path / "bench.json").read_text())
    assert {"machine", "config", "plan", "edit", "expected_scaled_unet_fraction", "wall_s"} <= set(results)
    assert results["machine"]["cores"] == os.cpu_count() and results["machine"]["torch"] == torch.__version__
    assert results["machine"]["device"] == "cpu" and results["machine"]["gpu"] is None
    by_size = results["edit"]["64"]
    assert by_size["render"]["seconds"] > 0 and by_size["render"]["memory"]["rss"]["peak_mb"] > 0
    assert set(by_size["edits"]) == {"fp32"} and set(by_size["edits"]["fp32"]) == {"1", "2"}
    for views, edit in by_size["edits"]["fp32"].items():
        for mode in ("ours", "reference", "ours_scaled_steps"):
            assert EDIT_KEYS <= set(edit[mode])
            for key in POSITIVE_TIMES:
                assert edit[mode][key] > 0, (views, mode, key)
            parts = sum(edit[mode][key] for key in EDIT_COMPONENTS if key != "total")
            assert edit[mode]["total"] == pytest.approx(parts)
        ours, reference = edit["ours"], edit["reference"]
        assert ours["derived"] is reference["derived"] is (timed_passes < 2)
        # Ours: the views share each UNet call; the reference calls it once per view and step.
        n = int(views)
        assert (ours["unet_calls"], ours["unet_view_passes"]) == (2, 2 * n)
        assert (reference["unet_calls"], reference["unet_view_passes"]) == (2 * n, 2 * n)
        assert reference["vae_encode_condition"] > 0
        assert ours["vae_encode_condition"] < reference["vae_encode_condition"]
        for name in ("ours", "ours_scaled_steps"):
            for key, ratio in edit["ratio"][name].items():
                assert ratio == pytest.approx(edit[name][key] / reference[key]), (name, key)
            assert set(EDIT_COMPONENTS) <= set(edit["ratio"][name])
        # Same computation; batch-size-dependent fp32 rounding, amplified by the guidance scales through the random
        # tiny networks, reaches ~1e-3 on these renders (the exact match is asserted on fixed inputs below).
        assert edit["max_abs_difference"] < 1e-2, "ours and the reference compute the same images"
        # Peak memory per mode: the resident set's peak, and what the edit added to it.
        expected_modes = {"ours", "reference"} | ({"ours_scaled_steps"} if timed_passes == 2 else set())
        assert set(edit["memory"]) == expected_modes
        for peaks in edit["memory"].values():
            assert peaks["rss"]["peak_mb"] > 100 and 0 <= peaks["rss"]["above_start_mb"] < peaks["rss"]["peak_mb"]
    assert not (tmp_path / "models" / "tiny").exists(), "the saved model is deleted at the end"

    table = (tmp_path / "bench.md").read_text()
    assert "| component | ours | reference | ours / reference |" in table
    assert "| 64 | fp32 | 2 |" in table and "RSS above start (MB)" in table
    assert results["machine"]["cpu"] in table and "everything on the CPU" in table


def test_reference_edit_equals_the_package_edit_when_the_options_match(tiny_ip2p: Path):
    editor = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    renders, originals = torch.rand(3, 3, 32, 48, generator=generator), torch.rand(3, 3, 32, 48, generator=generator)
    views, seeds = [0, 1, 2], [7, 8, 9]
    reference = ReferenceModeEditor(editor)
    settings = EditSettings(diffusion_steps=6)

    ours_cold = editor.edit(renders, originals, views, "snow", settings, seeds)
    ours_cached = editor.edit(renders, originals, views, "snow", settings, seeds)
    theirs = reference.edit(renders, originals, views, "snow", settings, seeds)
    torch.testing.assert_close(ours_cold, theirs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours_cached, theirs, atol=1e-5, rtol=1e-4)

    # The reference runs the full number of steps at every noise level, as the original did.
    scaled = EditSettings(diffusion_steps=6, scale_steps_with_noise=True)
    theirs_scaled = reference.edit(renders, originals, views, "snow", scaled, seeds)
    torch.testing.assert_close(theirs_scaled, theirs, atol=0, rtol=0)
    assert not torch.allclose(editor.edit(renders, originals, views, "snow", scaled, seeds), theirs, atol=1e-4)

    # Noise levels the edit loop chose (one stratum of the range per view) reach both alike.
    levels = [100, 500, 900]
    ours_levels = editor.edit(renders, originals, views, "snow", settings, seeds, levels)
    torch.testing.assert_close(ours_levels, reference.edit(renders, originals, views, "snow", settings, seeds, levels),
                               atol=1e-5, rtol=1e-4)  # fmt: skip
    assert not torch.allclose(ours_levels, theirs, atol=1e-4)


def test_compiled_editor_measurement_times_both_editors_on_the_same_edits(tiny_ip2p: Path):
    # A second uncompiled editor stands in for the compiled one: compiling even the tiny UNet takes about a minute on
    # a CPU (tests/test_compiled_editor.py checks the compiled editor's images).
    config = BenchConfig(device="cpu", steps=2, compile_views=(1, 2), repeats=2, model_size="tiny")
    plan = make_plan(config, "cpu")
    eager, stand_in = (InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu")) for _ in range(2))
    renders, originals = random_images(2, seed=0, height=64, width=64), random_images(2, seed=1, height=64, width=64)

    result = measure_compiled(config, plan, eager, stand_in, renders, originals, "fp32")

    assert set(result["by_views"]) == {"1", "2"} and result["precision"] == "fp32"
    for measured in result["by_views"].values():
        assert measured["eager_s"] > 0 and measured["compiled_s"] > 0
        assert measured["ratio"] == pytest.approx(measured["compiled_s"] / measured["eager_s"])
        assert len(measured["first_edits_s"]) == COMPILE_WARM_UP_EDITS and min(measured["first_edits_s"]) > 0
        assert measured["max_abs_difference"] == 0.0, "the same weights, renders and seeds give the same images"
        assert measured["still_compiled"] is False
    assert set(result["memory"]) == {"compiled, 1 views", "compiled, 2 views"}
    table = "\n".join(compiled_lines("64", result, plan.repeats))
    assert "| 2 | " in table and "(compiling failed: ran uncompiled)" in table and "RSS peak (MB)" in table


def test_unet_calls_of_batched_schedules_and_their_time():
    # Schedules are aligned at their end: the longest runs alone first, the others join for their last steps.
    assert call_sizes([3, 1, 2]) == [1, 2, 3]
    per_call = {1: 10.0, 2: 15.0, 3: 20.0}.__getitem__
    measured = [(3, 2.0), (3, 3.0)]
    assert unet_seconds(measured, [3, 3], per_call) == (5.0, False)
    assert unet_seconds(measured, [1, 2, 3], per_call) == (10.0 + 15.0 + 2.0, True)
    assert unet_seconds(measured, [3], per_call) == (2.0, True)


def test_plan_fills_in_each_devices_defaults():
    cuda = make_plan(BenchConfig(), "cuda")
    assert (cuda.sizes, cuda.views, cuda.precisions) == ((512,), (1, 2, 4), ("fp16", "fp32"))
    assert (cuda.timed_passes, cuda.repeats, cuda.training_modes, cuda.measure_render) == (
        20, 5, ("ours", "reference"), True,
    )  # fmt: skip
    assert cuda.warm_up_s > 0
    quick = make_plan(BenchConfig(quick=True), "cuda")
    assert (quick.repeats, quick.training_modes, quick.measure_render, quick.intervals) == (
        3, ("ours",), False, 2,
    )  # fmt: skip
    assert (cuda.compile_views, quick.compile_views) == ((1, 4), (1,))
    cpu = make_plan(BenchConfig(), "cpu")
    assert (cpu.sizes, cpu.views, cpu.precisions, cpu.timed_passes, cpu.repeats, cpu.warm_up_s) == (
        (256, 512), (2,), ("fp32",), 2, 1, 0.0,
    )  # fmt: skip
    assert cpu.compile_views == ()
    with pytest.raises(BenchError, match="--compile-views count from 1"):
        make_plan(BenchConfig(compile_views=(0,)), "cuda")
    # The edit size follows the model's family: SDXL InstructPix2Pix edits at 768 px.
    assert make_plan(BenchConfig(model_size="tiny-sdxl"), "cuda").sizes == (768,)
    explicit = make_plan(BenchConfig(sizes=(), views=(3,), repeats=2, timed_passes=50), "cuda")
    assert (explicit.sizes, explicit.views, explicit.repeats, explicit.timed_passes) == ((), (3,), 2, 20)
    with pytest.raises(BenchError, match="fp16 needs --device cuda"):
        make_plan(BenchConfig(precisions=("fp16",)), "cpu")


class FakeCounters(MemoryCounters):
    """A counter whose value the test sets, with a peak like the kernel's and CUDA's."""

    names = ("fake",)

    def __init__(self) -> None:
        self.value = self.peak = 100.0

    def set(self, value: float) -> None:
        self.value = value
        self.peak = max(self.peak, value)

    def current_mb(self) -> Dict[str, float]:
        return {"fake": self.value}

    def peaks_mb(self) -> Dict[str, float]:
        return {"fake": self.peak}

    def reset_peaks(self) -> None:
        self.peak = self.value


def test_phase_peaks_nest_and_keep_the_largest_call():
    counter = FakeCounters()
    counter.set(500.0)  # before measuring: counts for the process, not for any phase
    counter.set(100.0)
    memory = PhaseMemory(PeakTracker([counter]))
    with memory.phase("step"):
        counter.set(150.0)
        with memory.phase("render"):
            counter.set(400.0)
            counter.set(160.0)
        with memory.phase("edit"):
            counter.set(250.0)
            counter.set(160.0)
    with memory.phase("edit"):
        counter.set(200.0)
    phases = memory.report()
    assert phases["render"]["fake"] == {"peak_mb": 400.0, "above_start_mb": 250.0}
    # Two calls of "edit": the highest peak (250, first call) and the most added (200 - 160 = 40 by the second).
    assert phases["edit"]["fake"] == {"peak_mb": 250.0, "above_start_mb": 90.0}
    # The render's peak, inside the step, is the step's.
    assert phases["step"]["fake"] == {"peak_mb": 400.0, "above_start_mb": 300.0}
    assert memory.overall_mb() == {"fake": 500.0}


def test_phase_memory_of_the_resident_set_on_linux():
    memory = PhaseMemory.for_device("cpu")
    if "rss" not in memory.counter_names:
        pytest.skip("the resident set's peak cannot be reset on this system (Linux's /proc/self/clear_refs)")
    size_mb = 256
    with memory.phase("allocate"):
        block = torch.ones(size_mb * 1024**2 // 4)  # written, so resident
        del block
    with memory.phase("small"):
        torch.ones(1024)
    phases = memory.report()
    assert phases["allocate"]["rss"]["above_start_mb"] > 0.8 * size_mb
    # The large block is gone (given back to the system) before "small" starts, and its peak is not carried over.
    assert phases["small"]["rss"]["above_start_mb"] < 0.25 * size_mb
    assert phases["small"]["rss"]["peak_mb"] < phases["allocate"]["rss"]["peak_mb"]
    assert memory.overall_mb()["rss"] >= phases["allocate"]["rss"]["peak_mb"]


@pytest.mark.e2e
def test_launcher_reports_the_peak_memory_of_the_command(tmp_path: Path):
    size_mb = 300
    command = [sys.executable, "-c", f"b = bytearray({size_mb} * 1024 ** 2); print('done')"]
    usage = run_measured(command, tmp_path / "logs" / "alloc.log", dict(os.environ))
    assert size_mb <= usage["peak_rss_mb"] < size_mb + 200
    assert (tmp_path / "logs" / "alloc.log").read_text().strip() == "done"
    with pytest.raises(RuntimeError, match="exited 3"):
        run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "logs" / "fail.log", dict(os.environ))


def test_train_args_come_last_and_reach_every_training_command(tmp_path: Path):
    own, passed = split_train_args(["--quick", "--variants", "in2n", "--train-args", "--pipeline.ray-chunks", "4"])
    assert (own, passed) == (["--quick", "--variants", "in2n"], ["--pipeline.ray-chunks", "4"])
    assert split_train_args(["--quick"]) == (["--quick"], [])
    config = parse_args(["--device", "cpu", "--train-args", "--pipeline.edit-count", "2"])
    assert config.device == "cpu" and config.train_args == ("--pipeline.edit-count", "2")
    folders = RunFolders(tmp_path, tmp_path / "scene", tmp_path / "nerfacto", tmp_path / "model")
    args = in2n_args(config, folders, "in2n-ours")
    assert args[-2:] == ["--pipeline.edit-count", "2"] and args[args.index("--timestamp") + 1] == "in2n-ours"


@pytest.mark.e2e
def test_device_cuda_without_cuda_exits_with_one_line(tmp_path: Path):
    # Run from another folder: the script finds the bench package beside it.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cuda", "--output-dir", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("bench: --device cuda: no CUDA device is available on this machine (torch ")
    assert "--device cpu" in result.stderr and not (tmp_path / "out").exists()


def fake_training(step_s: float, tcnn: bool) -> dict:
    """A training measurement's results as a CUDA run writes them."""
    memory = {"rss": {"peak_mb": 9000.0, "above_start_mb": 10.0},
              "allocated": {"peak_mb": 15000.0, "above_start_mb": 11000.0},
              "reserved": {"peak_mb": 16000.0, "above_start_mb": 12000.0}}  # fmt: skip
    return {
        "setup_s": 20.0, "step_s": step_s, "edit_step_s": 1.5, "steps_per_s": 1 / step_s,
        "steps_per_s_with_editing": 10 / (9 * step_s + 1.5), "edit_rate": 10, "peak_rss_mb": 9000.0,
        "peak_allocated_mb": 15000.0, "peak_reserved_mb": 16000.0, "tcnn": tcnn,
        "phase_s": {"setup": 20.0, "train_step": step_s, "edit_step": 1.5, "render": 0.3, "edit": 1.0, "nerf": 0.2,
                    "eval_image": 0.4},
        "phase_memory": {"train_step": memory, "edit_step": memory, "render": memory, "edit": memory},
    }  # fmt: skip


def test_report_says_which_gpu_cuda_and_tiny_cuda_nn():
    machine = {"cpu": "Some Xeon", "cores": 16, "torch_threads": 16, "ram_gb": 128.0, "torch": "2.11.0+cu130",
               "python": "3.12.3", "platform": "Linux", "device": "cuda", "tcnn_installed": False,
               "gpu": {"name": "NVIDIA H200", "memory_gb": 139.8, "compute_capability": "9.0", "visible_devices": 1,
                       "cuda": "13.0", "cudnn": 91002}}  # fmt: skip
    results = {
        "machine": machine,
        "config": {"model_size": "sd15", "steps": 20, "train_steps": 3, "train_edits": 2, "train_args": []},
        "plan": {"repeats": 3, "warm_up_s": 3.0},
        "training_setup": "nerfacto's default model, 24 generated views of 512x384",
        "wall_s": 240.0,
        "training": {"in2n-lite": {"ours": fake_training(0.12, tcnn=False)}},
    }
    text = markdown(results)
    gpu = "- GPU: NVIDIA H200, 140 GB, compute capability 9.0 (1 visible); CUDA 13.0 (torch's build), cuDNN 9.10.2."
    assert gpu in text
    assert "- torch 2.11.0+cu130, Python 3.12.3, Linux." in text
    assert "- tiny-cuda-nn: not used (not installed): nerfacto ran its pure-torch hash grid and MLPs." in text
    assert "| in2n-lite | ms per training step without edit | 120 | not measured |  |" in text
    assert "| in2n-lite | peak GPU memory, max_memory_allocated (MB) | 15000 | not measured |  |" in text
    assert "| phase | median ms | RSS peak (MB) | RSS above start (MB) | CUDA allocated peak (MB) | " in text
    assert "| - of which the render of the view to edit | 300 | 9000 | 10.00 | 15000 | 11000 | 16000 |" in text
    assert "| nerfstudio's eval image (every steps_per_eval_image steps) | 400 |  |  |  |  |  |" in text

    results["training"]["in2n-lite"]["ours"]["tcnn"] = True
    assert "- tiny-cuda-nn: used by nerfacto in the training measurements." in markdown(results)
    cpu = {**results, "machine": {**machine, "device": "cpu", "gpu": None}, "training": {}}
    assert "- CPU: Some Xeon, 16 cores (16 torch threads), 128 GB RAM; everything on the CPU, fp32." in markdown(cpu)


@pytest.mark.e2e
def test_the_lpips_probe_builds_the_network_both_ways(tmp_path: Path) -> None:
    for way in ("pretrained", "in2n"):
        result = subprocess.run(
            [sys.executable, "-m", "bench.probes", "lpips", "--way", way, "--work", str(tmp_path)],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["way"] == way and report["seconds"] > 0
        assert report["memory_mb"]["build"]["rss"]["above_start_mb"] >= 0
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").is_file()


def test_the_phase_editor_times_the_edits_the_loop_makes() -> None:
    phases = Phases("cpu")
    editor = PhaseEditor(NegativeEditor(), phases)
    images = TrainingImages(torch.rand(4, 8, 10, 3, generator=torch.Generator().manual_seed(0)))
    loop = EditLoop(EditLoopConfig(edit_rate=1, edit_count=2), editor, lambda v, p: ViewRender(images.rows[v]), images)
    for step in range(3):
        loop.before_step(step)
    assert len(phases.seconds["edit"]) == 3 and loop.schedule.views_edited == 6
    assert "edit" in phases.memory.report()


def test_splat_variants_and_time_to_converged_are_measured_by_default_on_cuda_only():
    cuda, quick, cpu = (
        make_plan(BenchConfig(), "cuda"),
        make_plan(BenchConfig(quick=True), "cuda"),
        make_plan(BenchConfig(), "cpu"),
    )
    assert cuda.variants == ("in2n-big", "in2n", "in2n-lite", "in2n-splat", "in2n-splat-lite") == quick.variants
    assert cpu.variants == ("in2n-big", "in2n", "in2n-lite"), "the CPU's splat route says nothing about a GPU"
    assert (cuda.convergence_variants, quick.convergence_variants, cpu.convergence_variants) == (
        ("in2n-lite", "in2n-splat"), (), (),
    )  # fmt: skip
    assert make_plan(BenchConfig(variants=("in2n-splat",)), "cpu").variants == ("in2n-splat",)


def test_splat_measurements_start_from_the_splatfacto_run(tmp_path: Path):
    config = parse_args(["--device", "cpu"])
    folders = RunFolders(tmp_path, tmp_path / "scene", tmp_path / "nerfacto", tmp_path / "model", tmp_path / "splats")
    assert in2n_args(config, folders, "a", "in2n-splat")[3] == str(tmp_path / "splats")
    assert in2n_args(config, folders, "b", "in2n-lite")[3] == str(tmp_path / "nerfacto")


def test_report_shows_a_pass_as_the_splats_step_with_an_edit_and_the_time_to_converged():
    splat = {**fake_training(0.02, tcnn=False), "edit_step_s": 24.0, "edit_interval": 2500, "views_per_edit_step": 20,
             "edit_step_per_view_s": 1.2}  # fmt: skip
    del splat["tcnn"]
    results = {
        "machine": {"cpu": "Some Xeon", "cores": 16, "torch_threads": 16, "ram_gb": 128.0, "torch": "2.11.0",
                    "python": "3.12.3", "platform": "Linux", "device": "cpu", "tcnn_installed": False, "gpu": None},
        "config": {"model_size": "sd15", "steps": 20, "train_steps": 3, "train_edits": 2, "train_args": []},
        "plan": {"repeats": 3, "warm_up_s": 0.0},
        "training_setup": "a setup",
        "wall_s": 240.0,
        "training": {"in2n-lite": {"ours": fake_training(0.12, tcnn=False)}, "in2n-splat": {"ours": splat}},
        "edit": {"512": {"edits": {"fp16": {"1": {"ours": {"total": 1.5}}, "4": {"ours": {"total": 1.2}}}}}},
        "convergence": {
            "in2n-splat": {"wall_s": 100.0, "peak_rss_mb": 5000.0, "converged": True, "steps": 12501, "step_limit":
                           25000, "edits": 120, "passes": 5, "views_per_call": 4},
            "in2n-lite": {"wall_s": 300.0, "peak_rss_mb": 4000.0, "converged": False, "steps": 2000, "step_limit":
                          2000, "edits": 200, "passes": 10, "views_per_call": 1},
        },
    }  # fmt: skip
    # The edit table's results are only what the estimate reads: its own table is not drawn.
    text = "\n".join(training_lines(results) + convergence_lines(results)).replace("\n| ", "\n|")
    assert "|in2n-splat | steps/s with editing every 2500 steps |" in text
    assert "|in2n-lite | steps/s with editing every 10 steps |" in text
    assert "|in2n-splat | ms per edited view in a step with an edit | 1200 |" in text
    assert "|in2n-splat | yes | 12501 | 5 | 120 | 100 | 5000 | 244* |" in text, "100 s + 120 edits x 1.2 s"
    assert "|in2n-lite | no (stopped at 2000 steps) | 2000 | 10 | 200 | 300 | 4000 | 600* |" in text


@pytest.mark.e2e
def test_the_edit_is_timed_on_one_and_on_two_processes_launched_as_ns_train_does(tmp_path: Path):
    config = BenchConfig(
        device="cpu", model_size="tiny", sizes=(), variants=(), concurrency_variant=None, num_devices=(2, 1),
        scaling_variant="in2n-lite", intervals=1, output_dir=tmp_path,
    )  # fmt: skip
    results = run(config)

    scaling = json.loads((tmp_path / "bench.json").read_text())["scaling"]
    assert scaling == as_json(results["scaling"])
    assert (scaling["variant"], scaling["edit_count"]) == ("in2n-lite", 2), "in2n-lite's 1 view, raised to 2"
    runs = scaling["by_devices"]
    assert list(runs) == ["1", "2"]
    for count, measured in runs.items():
        # One timed edit interval of in2n-lite (an edit every 10 steps), after an untimed one.
        assert measured["devices"] == int(count) and measured["edit_rate"] == 10
        assert (measured["timed_steps"], measured["views_edited"], measured["views_per_edit_step"]) == (10, 2, 2)
        assert measured["steps_per_s"] / measured["views_per_s"] == pytest.approx(10 / 2)
        assert 0 < measured["step_s"] < measured["edit_step_s"]
        assert measured["edit_view_s"] == pytest.approx((measured["edit_step_s"] - measured["step_s"]) / 2)
        assert measured["peak_rss_mb"] > 100
    for key in ("steps_per_s", "views_per_s", "step_s", "edit_view_s", "peak_rss_mb"):
        assert scaling["ratio"]["2"][key] == pytest.approx(runs["2"][key] / runs["1"][key]), key
    # Each run is an in2n run folder of its own, its config saved as ns-train saves it.
    for count in ("1", "2"):
        assert (tmp_path / "runs" / "scene" / "in2n-lite" / f"in2n-lite-{count}-devices" / "config.yml").is_file()

    table = (tmp_path / "bench.md").read_text()
    assert "## Several devices (in2n-lite, ns-train --machine.num-devices N; 2 views per edit every 10 steps" in table
    assert "| measurement | 1 CPU process | 2 CPU processes | 2 / 1 |" in table
    ratio = number(scaling["ratio"]["2"]["views_per_s"])
    assert f"| views edited per second over whole edit intervals | {number(runs['1']['views_per_s'])} | " in table
    assert f"{number(runs['2']['views_per_s'])} | {ratio} |" in table


def test_device_counts_default_to_every_visible_gpu_and_are_checked():
    assert make_plan(BenchConfig(), "cuda", gpus=4).num_devices == (1, 4)
    assert make_plan(BenchConfig(), "cuda", gpus=1).num_devices == () == make_plan(BenchConfig(), "cpu").num_devices
    assert make_plan(BenchConfig(num_devices=(2, 1, 2)), "cpu").num_devices == (1, 2), "processes over gloo on the CPU"
    assert make_plan(BenchConfig(num_devices=()), "cuda", gpus=8).num_devices == ()
    with pytest.raises(
        BenchError, match=r"^--num-devices 2: this machine has 1 CUDA device\(s\) visible\. Use at most 1"
    ):
        make_plan(BenchConfig(num_devices=(1, 2)), "cuda", gpus=1)
    with pytest.raises(BenchError, match="--num-devices counts devices from 1"):
        make_plan(BenchConfig(num_devices=(0, 2)), "cpu")
    with pytest.raises(BenchError, match="--scaling-variant in2n-splat: a splat edit runs on one device"):
        make_plan(BenchConfig(num_devices=(1, 2), scaling_variant="in2n-splat"), "cpu")
    with pytest.raises(BenchError, match="--scaling-variant in2n-splat-lite: a splat edit runs on one device"):
        make_plan(BenchConfig(scaling_variant="in2n-splat-lite"), "cuda", gpus=2)  # the default counts too
    # Every run edits a whole share per device of the largest run.
    counts = [(1, [1, 2]), (4, [1, 2]), (3, [1, 2]), (4, [1, 3]), (1, [1])]
    assert [edit_count_for(default, devices) for default, devices in counts] == [2, 4, 4, 6, 1]
    # A count the run's rays cannot be shared out on (in2n: 16384 rays, 16 LPIPS patches) is skipped, with why.
    spec = {"device": "cpu", "variant": "in2n", "args": []}
    assert launch_problems_on({**spec, "devices": 2}) == [] == launch_problems_on({**spec, "devices": 4})
    (problem,) = launch_problems_on({**spec, "devices": 3})
    assert "gives 16, which do not split into 3 equal shares. Use a multiple of 3072 rays." in problem


def test_report_says_when_several_gpus_were_not_measured_and_shows_the_scaling():
    gpu = {"name": "NVIDIA H200", "memory_gb": 139.8, "compute_capability": "9.0", "visible_devices": 1,
           "cuda": "13.0", "cudnn": 91002}  # fmt: skip
    assert scaling_lines({"machine": {"gpu": gpu}}) == [
        "## Several devices (ns-train --machine.num-devices N)", "",
        "Not measured: 1 CUDA device visible; it takes 2 or more.", "",
    ]  # fmt: skip
    assert scaling_lines({"machine": {"gpu": None}}) == [], "the CPU measures them only when asked"
    one = {"devices": 1, "steps_per_s": 2.0, "views_per_s": 0.4, "step_s": 0.4, "edit_step_s": 2.4,
           "edit_view_s": 0.5, "timed_steps": 30, "views_edited": 6, "views_per_edit_step": 2, "edit_rate": 10,
           "peak_rss_mb": 9000.0, "peak_allocated_mb": 5000.0}  # fmt: skip
    two = {**one, "devices": 2, "steps_per_s": 3.5, "views_per_s": 0.7, "step_s": 0.25, "edit_view_s": 0.26}
    results = {"machine": {"gpu": {**gpu, "visible_devices": 2}},
               "scaling": {"variant": "in2n", "edit_count": 2, "by_devices": {"1": one, "2": two},
                           "ratio": {"2": ratios(two, one)}}}  # fmt: skip
    text = "\n".join(scaling_lines(results))
    assert (
        "## Several devices (in2n, ns-train --machine.num-devices N; 2 views per edit every 10 steps, 30 timed" in text
    )
    assert "| measurement | 1 GPU | 2 GPUs | 2 / 1 |" in text and "share its cores" not in text
    assert "| steps/s over whole edit intervals | 2.00 | 3.50 | 1.75 |" in text
    assert "| ms per edited view: the step with an edit above one without, per view | 500 | 260 | 0.520 |" in text
    assert "| peak GPU memory of rank 0, max_memory_allocated (MB) | 5000 | 5000 | 1.00 |" in text
    assert "max_memory_reserved" not in text, "rows the runs have no number for are left out"
    results["scaling"]["skipped"] = {"3": "--machine.num-devices 3 shares each step's rays out ..."}
    assert scaling_lines(results)[-2:] == [
        "Not measured on 3 devices: --machine.num-devices 3 shares each step's rays out ...", "",
    ]  # fmt: skip
