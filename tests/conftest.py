"""Shared fixtures: a generated scene, tiny InstructPix2Pix models (SD and SDXL), an offline LPIPS backbone, a trained
nerfacto run and its negative edit.

Nothing here touches the network: the diffusion model and the AlexNet weights are random and built locally.

`make test` runs the tests in two pytest-xdist workers. The scene and the trained runs are made once for both: the
first worker to need one builds it under a file lock in the folder the workers share, the other waits and reuses it.
Each worker, and every process it starts, computes on one thread, so two workers share the two cores instead of
four threads fighting over them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import torch
from filelock import FileLock

import in2n.console
from in2n.synthetic.cpu_preset import CPU_TRAINER_ARGS, SMALL_MODEL_ARGS, SMALL_SPLAT_ARGS, SPLAT_EDIT_ARGS
from in2n.synthetic.ip2p import save_random_ip2p
from in2n.synthetic.lpips_backbone import write_random_alexnet
from in2n.synthetic.scene import SceneConfig, write_scene


def under_xdist() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


if under_xdist():
    # Set before any test starts a process, so that ns-train and the tools inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


BIN = Path(sys.executable).parent
SCENE = SceneConfig(num_views=20, width=64, height=48, seed=0, points=4000)
NERFACTO_STEPS = 300
NEGATIVE_EDIT_STEPS = 200
SPLATFACTO_STEPS = 300
SPLAT_EDIT_STEPS = 150
SPLAT_PASS_EVERY = 25
"""The splat edit: a pass over every view every 25 steps, 6 passes."""


SEEDED_NS_TRAIN = [sys.executable, str(Path(__file__).with_name("seeded_ns_train.py"))]
"""`ns-train` for nerfstudio's own methods (nerfacto, depth-nerfacto): the same model on every run of the suite, and so
the same edits of it (tests/seeded_ns_train.py says why ns-train alone does not)."""


def ns(command: str) -> str:
    return str(BIN / command)


def run(
    args: List[str], cwd: Path, timeout: float = 900, check: bool = True, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """Run a command with the test environment (and `env` on top of it); on failure show its output."""
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args[0]} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture(scope="session", autouse=True)
def offline_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TORCH_HOME with a random AlexNet (nerfacto builds LPIPS from it)."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    write_random_alexnet(torch_home)
    os.environ["TORCH_HOME"] = str(torch_home)
    return torch_home


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """One-time notices are once per process; each test starts as a fresh process would."""
    monkeypatch.setattr(in2n.console, "_shown", set())


@pytest.fixture(scope="session")
def tiny_ip2p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random InstructPix2Pix saved like a downloaded one."""
    return save_random_ip2p(tmp_path_factory.mktemp("models") / "tiny-ip2p", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_sdxl_ip2p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random SDXL InstructPix2Pix saved like a downloaded one."""
    return save_random_ip2p(tmp_path_factory.mktemp("models") / "tiny-sdxl-ip2p", size="tiny-sdxl", seed=0)


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every worker of this pytest run sees (the session's own temporary folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if under_xdist() else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Path]) -> Path:
    """The path `build(folder)` returns, built by one worker of this pytest run for all of them. A failure is raised
    in each worker that asks (its message is kept beside the folder), without building again."""
    root = shared_root(tmp_path_factory)
    folder, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.exists():
            raise AssertionError(f"building {name} failed in another worker:\n{failed.read_text()}")
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                built = build(folder)
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}")
                raise
            done.write_text(str(built))
        return Path(done.read_text())


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def make(folder: Path) -> Path:
        write_scene(folder, SCENE)
        return folder

    return built_once(tmp_path_factory, "scene", make)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the shared runs, and the tests' own runs (each under its own name), are written."""
    return built_once(tmp_path_factory, "runs", lambda folder: folder)


def train_nerfacto(scene: Path, workdir: Path, experiment: str, method: str = "nerfacto", *extra: str) -> Path:
    """Train the small nerfacto (or `method`, e.g. depth-nerfacto, with `extra` options) on `scene`; returns its
    nerfstudio_models folder."""
    run(
        [*SEEDED_NS_TRAIN, method, *CPU_TRAINER_ARGS, *SMALL_MODEL_ARGS, "--vis", "tensorboard",
         "--max-num-iterations", NERFACTO_STEPS, "--steps-per-save", NERFACTO_STEPS,
         "--pipeline.datamanager.train-num-rays-per-batch", "1024", *extra,
         "--output-dir", workdir / "outputs", "--experiment-name", experiment, "--timestamp", method,
         "nerfstudio-data", "--data", scene],
        cwd=workdir,
    )  # fmt: skip
    models = workdir / "outputs" / experiment / method / method / "nerfstudio_models"
    assert list(models.glob("step-*.ckpt")), f"{method} wrote no checkpoint"
    return models


@pytest.fixture(scope="session")
def nerfacto_run(scene: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nerfstudio_models folder of a small nerfacto trained on the scene."""
    return built_once(tmp_path_factory, "nerfacto-run", lambda _: train_nerfacto(scene, workdir, "scene"))


def in2n_args(load_dir: Path, workdir: Path, name: str, *extra) -> List[str]:
    """`ns-train in2n` on the CPU with the small model, editing the nerfacto run in `load_dir`."""
    return [ns("ns-train"), "in2n", *CPU_TRAINER_ARGS, *SMALL_MODEL_ARGS, "--vis", "tensorboard",
            "--pipeline.datamanager.train-num-rays-per-batch", "1024",
            "--load-dir", load_dir, "--output-dir", workdir / "outputs", "--experiment-name", "scene",
            "--timestamp", name, *extra]  # fmt: skip


def in2n_run_dir(workdir: Path, name: str) -> Path:
    return workdir / "outputs" / "scene" / "in2n" / name


NEGATIVE_OPTIONS = ["--pipeline.editor", "negative", "--pipeline.edit-rate", "1", "--pipeline.edit-count", "3",
                    "--pipeline.log-strips-every", "20", "--steps-per-eval-image", "1000",
                    "--steps-per-eval-batch", "1000"]  # fmt: skip
"""Three views edited every step by the negative editor: the short edit converges instead of touching each view a few
times. Strips of the edited views go to the logger every 20 steps."""
NEGATIVE_LOG = "ns-train.log"
"""What ns-train printed while editing the negative run, kept in its run folder."""


@pytest.fixture(scope="session")
def negative_run(nerfacto_run: Path, scene: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of an in2n edit with the negative editor, which stops once converged (before
    NEGATIVE_EDIT_STEPS). Shared by the tests of convergence, held-out views, export, strips and the logger."""

    def edit(_: Path) -> Path:
        result = run(in2n_args(nerfacto_run, workdir, "negative", "--max-num-iterations", NEGATIVE_EDIT_STEPS,
                               *NEGATIVE_OPTIONS, "--pipeline.stop-when-converged", "True",
                               "nerfstudio-data", "--data", scene), cwd=workdir)  # fmt: skip
        run_dir = in2n_run_dir(workdir, "negative")
        (run_dir / NEGATIVE_LOG).write_text(result.stdout + result.stderr)
        return run_dir

    return built_once(tmp_path_factory, "negative-run", edit)


@pytest.fixture(scope="session")
def depth_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scene with its depths (the same images)."""

    def make(folder: Path) -> Path:
        write_scene(folder, replace(SCENE, depth=True))
        return folder

    return built_once(tmp_path_factory, "depth-scene", make)


@pytest.fixture(scope="session")
def depth_run(depth_scene: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small depth-nerfacto of the scene, the run the region edits start from.

    A box follows the NeRF's depth, and a 300-step NeRF on the CPU learns the scene's geometry only from its depths,
    weighted more than depth-nerfacto's default: measured on the training views, the surface points of the sphere's
    pixels were off by 1-5.6 scene units with nerfacto and 0.6-2.4 with depth-nerfacto's default weight 0.001 (the
    sphere's radius is under 0.35, the cameras are 3 units from the centre), 0.04-0.07 with the weight 0.05.
    """
    depth_weight = ["--pipeline.model.depth-loss-mult", "0.05"]
    return built_once(
        tmp_path_factory, "depth-run",
        lambda _: train_nerfacto(depth_scene, workdir, "depth-scene", "depth-nerfacto", *depth_weight),
    )  # fmt: skip


def train_splatfacto(scene: Path, workdir: Path, experiment: str) -> Path:
    """Train the small splatfacto (in2n-splatfacto: splatfacto's model and training, rendered in torch on the CPU) on
    `scene` from its point cloud; returns its nerfstudio_models folder."""
    run(
        [ns("ns-train"), "in2n-splatfacto", *CPU_TRAINER_ARGS, *SMALL_SPLAT_ARGS, "--vis", "tensorboard",
         "--max-num-iterations", SPLATFACTO_STEPS, "--steps-per-save", SPLATFACTO_STEPS,
         "--output-dir", workdir / "outputs", "--experiment-name", experiment, "--timestamp", "splatfacto",
         "nerfstudio-data", "--data", scene],
        cwd=workdir,
    )  # fmt: skip
    models = workdir / "outputs" / experiment / "in2n-splatfacto" / "splatfacto" / "nerfstudio_models"
    assert list(models.glob("step-*.ckpt")), "in2n-splatfacto wrote no checkpoint"
    return models


@pytest.fixture(scope="session")
def splatfacto_run(scene: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nerfstudio_models folder of a small splatfacto trained on the scene."""
    return built_once(tmp_path_factory, "splatfacto-run", lambda _: train_splatfacto(scene, workdir, "scene"))


def splat_args(load_dir: Path, workdir: Path, name: str, *extra) -> List[str]:
    """`ns-train in2n-splat` on the CPU with the negative editor and the small edit's options, editing the splatfacto
    run in `load_dir`; a pass over every view every SPLAT_PASS_EVERY steps, 6 views per call."""
    return [ns("ns-train"), "in2n-splat", *CPU_TRAINER_ARGS, *SMALL_SPLAT_ARGS, *SPLAT_EDIT_ARGS,
            "--vis", "tensorboard", "--pipeline.editor", "negative", "--pipeline.pass-every", SPLAT_PASS_EVERY,
            "--pipeline.edit-count", "6", "--load-dir", load_dir, "--output-dir", workdir / "outputs",
            "--experiment-name", "scene", "--timestamp", name, *extra]  # fmt: skip


def splat_run_dir(workdir: Path, name: str) -> Path:
    return workdir / "outputs" / "scene" / "in2n-splat" / name


@pytest.fixture(scope="session")
def splat_negative_run(
    splatfacto_run: Path, scene: Path, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The run folder of an in2n-splat edit with the negative editor, long enough for the scene to converge."""

    def edit(_: Path) -> Path:
        run(splat_args(splatfacto_run, workdir, "negative", "--max-num-iterations", SPLAT_EDIT_STEPS,
                       "nerfstudio-data", "--data", scene), cwd=workdir)  # fmt: skip
        return splat_run_dir(workdir, "negative")

    return built_once(tmp_path_factory, "splat-negative-run", edit)
