"""The project's demo: the built-in procedural scene reconstructed, edited and rendered before/after, end to end.

Stages, each a real command whose output is shown as it runs:

1. ``in2n-make-scene``: the scene (three spheres and a box on a checkered disc) as a nerfstudio dataset;
2. ``ns-train nerfacto``: a small nerfacto, the model the edit starts from (with ``--splat True``: splatfacto, as
   ``ns-train in2n-splatfacto`` on a machine without a GPU);
3. ``ns-train in2n --load-dir ...`` (``in2n-splat`` with ``--splat True``): the edit, with InstructPix2Pix when a
   CUDA GPU and its weights are available, otherwise with the deterministic negative editor (a recolouring that
   ignores the prompt);
4. ``in2n-compare``: both runs rendered along the orbit shipped for the scene, side by side.

Everything goes to ``.demo/`` (git-ignored). A stage whose result exists from an earlier demo run with the same
command is reused, unless an earlier stage ran again or ``--fresh`` is given. Usage: ``make demo`` or
``python scripts/demo.py --help``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Tuple
from urllib.parse import urlparse

import torch
import tyro

import in2n.tools  # noqa: F401  (first of in2n: sets the console up before nerfstudio is imported)
from in2n.editors.loading import DEFAULT_IP2P_MODEL
from in2n.errors import In2nError
from in2n.hub import looks_like_path
from in2n.model import alexnet_weights_path
from in2n.synthetic.camera_path import ORBIT_SCENE, SHIPPED_CAMERA_PATH
from in2n.synthetic.cpu_preset import CPU_TRAINER_ARGS, SMALL_MODEL_ARGS, SMALL_SPLAT_ARGS, SPLAT_EDIT_ARGS
from in2n.synthetic.lpips_backbone import write_random_alexnet
from in2n.synthetic.scene import SceneConfig
from in2n.tools.compare import STILL_NAME, VIDEO_NAME
from in2n.tools.plot import PLOT_NAME

REPOSITORY = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENT = "scene"
TIMESTAMP = "demo"
"""Fixed run names, so that a later demo finds the runs of an earlier one."""
PROBE_TIMEOUT_S = 3.0
"""How long to wait for a server to answer before counting it as unreachable."""
TORCHVISION_WEIGHTS_HOST = "download.pytorch.org"
EDIT_SCHEDULE_ARGS = [
    "--pipeline.edit-rate", "1", "--pipeline.edit-count", "3", "--pipeline.stop-when-converged", "True",
]  # fmt: skip
"""Three views edited on every step: the short edit converges instead of touching each view a few times; the run
stops once it has (the plot shows where)."""
SPLAT_SCHEDULE_ARGS = [
    "--pipeline.pass-every", "25", "--pipeline.edit-count", "6", "--pipeline.stop-when-converged", "True",
]  # fmt: skip
"""Every view edited every 25 steps, six per diffusion call: six passes in the demo's 150 steps (the method's 2500
steps between passes suit a splatfacto of 30000 steps)."""
SPLAT_POINTS = 4000
"""Points of the scene's point cloud, which splatfacto starts its Gaussians from."""

Editor = Literal["ip2p", "negative"]


@dataclass
class DemoConfig:
    """Run in2n end to end on the built-in scene: generate it, train nerfacto, edit it, render before/after."""

    prompt: str = "make the spheres look like bronze"
    """The instruction (used by InstructPix2Pix; the negative editor ignores it)."""
    ip2p_model: str = DEFAULT_IP2P_MODEL
    """InstructPix2Pix weights: a Hugging Face hub id or a folder saved with `save_pretrained`."""
    nerfacto_steps: int = 500
    """Training steps of the nerfacto the edit starts from."""
    edit_steps: int = 150
    """Training steps of the edit."""
    camera_path: Path = SHIPPED_CAMERA_PATH
    """Camera path of the before/after renders (the default orbit is made for the demo's scene)."""
    render_width: int = 256
    """Width in pixels of each side of the before/after renders (the scene trains at 64x48; a NeRF renders any
    size)."""
    output_dir: Path = REPOSITORY / ".demo"
    """Folder for the scene, the runs and the renders."""
    fresh: bool = False
    """Redo every stage, even those whose results an earlier demo left."""
    splat: bool = False
    """Edit Gaussian splats: train splatfacto (in2n-splatfacto without a CUDA GPU) and edit it with in2n-splat."""
    splatfacto_steps: int = 300
    """Training steps of the splatfacto the splat edit starts from (--splat True)."""


@dataclass
class EditorChoice:
    """The editor the demo runs, and why."""

    editor: Editor
    """`ip2p` (InstructPix2Pix) or `negative` (deterministic recolouring to the negative)."""
    reason: str
    """Why, in words for the user."""


@dataclass
class Stage:
    """One command of the demo."""

    name: str
    """Short name; the record of a finished stage is stages/<name>.json."""
    title: str
    """What the stage does, for its header."""
    command: List[str]
    """The command line."""
    output: Path
    """The folder (or file) the stage writes; removed before it runs, so no earlier attempt is mixed in."""


@dataclass
class DemoResult:
    """Where the demo put its results."""

    editor: EditorChoice
    """The editor the edit ran with, and why."""
    scene: Path
    """The dataset folder."""
    nerfacto_run: Path
    """The run folder the edit starts from: nerfacto (or splatfacto, with --splat True)."""
    edited_run: Path
    """The run folder of the edit."""
    renders: Path
    """The in2n-compare output: before/after video and still, the frames of each run."""
    progress_plot: Path
    """The edit's progress, plotted by in2n-plot (beside the before/after)."""
    stages_run: List[str] = field(default_factory=list)
    """Names of the stages that ran (the others were reused)."""


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the URL's host opens within the timeout; name resolution included, which
    socket timeouts do not cover, hence the thread."""
    parsed = urlparse(url if "://" in url else f"https://{url}")
    answer: List[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answer and answer[0])


def _ip2p_in_cache(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "model_index.json"), str)


def choose_editor(ip2p_model: str) -> EditorChoice:
    """InstructPix2Pix if it can run usefully here: a CUDA GPU, and weights in a folder, the cache or the hub."""
    if not torch.cuda.is_available():
        return EditorChoice(
            "negative",
            "there is no CUDA GPU, and InstructPix2Pix on a CPU takes minutes per view (README, Performance)",
        )
    if Path(ip2p_model).expanduser().is_dir():
        return EditorChoice("ip2p", f"a CUDA GPU is available and the weights are in {ip2p_model}")
    if looks_like_path(ip2p_model):
        return EditorChoice("negative", f"--ip2p-model {ip2p_model} is not a folder")
    if _ip2p_in_cache(ip2p_model):
        return EditorChoice("ip2p", f"a CUDA GPU is available and {ip2p_model} is in the Hugging Face cache")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return EditorChoice(
            "negative", f"{ip2p_model} is not in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it"
        )
    if reachable(constants.ENDPOINT):
        return EditorChoice(
            "ip2p", f"a CUDA GPU is available; {ip2p_model} is downloaded (about 5 GB) into the Hugging Face cache"
        )
    return EditorChoice(
        "negative", f"{ip2p_model} is not in the Hugging Face cache and {constants.ENDPOINT} cannot be reached"
    )


def lpips_environment(output_dir: Path) -> Tuple[Dict[str, str], str]:
    """Environment variables that let nerfacto build its LPIPS network here, and a sentence saying which weights.

    nerfacto needs torchvision's AlexNet weights at construction. Without them and without a way to download them,
    a demo-local TORCH_HOME with random weights lets the pipeline run; its LPIPS values mean nothing.
    """
    weights = alexnet_weights_path()
    if weights.is_file():
        return {}, f"LPIPS uses torchvision's AlexNet weights in {weights}."
    if reachable(TORCHVISION_WEIGHTS_HOST):
        return {}, f"LPIPS: nerfacto downloads torchvision's AlexNet weights (233 MB) to {weights}."
    torch_home = output_dir / "torch_home"
    write_random_alexnet(torch_home)
    return {"TORCH_HOME": str(torch_home)}, (
        f"LPIPS: {weights} is missing and {TORCHVISION_WEIGHTS_HOST} cannot be reached, so this demo uses RANDOM "
        f"AlexNet weights ({torch_home}). The LPIPS loss is then meaningless: this demonstrates the pipeline, it is "
        "not a real edit."
    )


def trainer_args(device: str) -> List[str]:
    """Trainer options for the device: the CPU preset, or CUDA with nerfacto's default mixed precision."""
    if device == "cpu":
        return CPU_TRAINER_ARGS
    return ["--machine.device-type", device, "--viewer.quit-on-train-completion", "True"]


def scene_args(scene: SceneConfig) -> List[str]:
    """in2n-make-scene options that reproduce the scene config exactly (tyro spells booleans as --x / --no-x)."""
    args = []
    for option in dataclasses.fields(scene):
        name, value = option.name.replace("_", "-"), getattr(scene, option.name)
        args += [f"--{name}" if value else f"--no-{name}"] if isinstance(value, bool) else [f"--{name}", str(value)]
    return args


def stages(config: DemoConfig, editor: Editor, device: str) -> List[Stage]:
    """The demo's commands. Paths are absolute, so the runs' config.yml work from any folder."""
    output = config.output_dir
    scene, runs, renders = output / "scene", output / "outputs", output / "before_after"
    if config.splat:
        # splatfacto as shipped needs CUDA; in2n-splatfacto is the same model rendering in torch on the CPU.
        base, base_steps, method = (
            ("splatfacto" if device == "cuda" else "in2n-splatfacto"),
            config.splatfacto_steps,
            "in2n-splat",
        )
        model_args, edit_args = [*SMALL_SPLAT_ARGS], [*SPLAT_EDIT_ARGS, *SPLAT_SCHEDULE_ARGS]
        scene_config = dataclasses.replace(ORBIT_SCENE, points=SPLAT_POINTS)
    else:
        base, base_steps, method = "nerfacto", config.nerfacto_steps, "in2n"
        model_args = [*SMALL_MODEL_ARGS, "--pipeline.datamanager.train-num-rays-per-batch", "1024"]
        edit_args = [*EDIT_SCHEDULE_ARGS, "--steps-per-eval-batch", "1000"]
        scene_config = ORBIT_SCENE
    nerfacto_run = runs / EXPERIMENT / base / TIMESTAMP
    edited_run = runs / EXPERIMENT / method / TIMESTAMP
    train = [*trainer_args(device), *model_args, "--vis", "tensorboard", "--output-dir", str(runs),
             "--experiment-name", EXPERIMENT, "--timestamp", TIMESTAMP]  # fmt: skip
    data = ["nerfstudio-data", "--data", str(scene)]
    ip2p = ["--pipeline.ip2p-model", config.ip2p_model] if editor == "ip2p" else []
    make_scene = [str(BIN / "in2n-make-scene"), "--output-dir", str(scene), *scene_args(scene_config)]
    train_nerfacto = [str(BIN / "ns-train"), base, *train, "--max-num-iterations", str(base_steps),
                      "--steps-per-save", str(base_steps), *data]  # fmt: skip
    edit = [str(BIN / "ns-train"), method, *train, "--load-dir", str(nerfacto_run / "nerfstudio_models"),
            "--max-num-iterations", str(config.edit_steps), "--pipeline.editor", editor,
            "--pipeline.prompt", config.prompt, *ip2p, *edit_args, "--steps-per-eval-image", "1000", *data]  # fmt: skip
    compare = [str(BIN / "in2n-compare"), "--original", str(nerfacto_run / "config.yml"),
               "--edited", str(edited_run / "config.yml"), "--camera-path", str(config.camera_path.resolve()),
               "--output-dir", str(renders), "--render-width", str(config.render_width)]  # fmt: skip
    plot = [str(BIN / "in2n-plot"), str(edited_run), "--output", str(renders / PLOT_NAME)]
    return [
        Stage("scene", "Generate the scene", make_scene, scene),
        Stage("nerfacto", f"Train {base} ({base_steps} steps)", train_nerfacto, nerfacto_run),
        Stage("edit", f"Edit it with the {editor} editor ({config.edit_steps} steps)", edit, edited_run),
        Stage("compare", "Render before and after along the camera path", compare, renders),
        Stage("plot", "Plot the edit's progress", plot, renders / PLOT_NAME),
    ]


def minutes(seconds: float) -> str:
    return f"{seconds // 60:.0f}:{seconds % 60:02.0f}"


class StageRunner:
    """Runs stages in order with numbered headers, reusing those an earlier demo finished with the same command."""

    def __init__(self, records: Path, total: int, fresh: bool, env: Dict[str, str]) -> None:
        self.records = records
        self.total = total
        self.redo = fresh
        self.env = env
        self.started = time.perf_counter()
        self.ran: List[str] = []

    def header(self, number: int, title: str) -> None:
        elapsed = minutes(time.perf_counter() - self.started)
        print(f"\n=== [{number}/{self.total}] {title}  (demo time {elapsed})", flush=True)

    def finished_before(self, stage: Stage) -> bool:
        record = self.records / f"{stage.name}.json"
        return (
            not self.redo
            and record.is_file()
            and stage.output.exists()
            and json.loads(record.read_text())["command"] == stage.command
        )

    def run(self, number: int, stage: Stage) -> None:
        self.header(number, stage.title)
        if self.finished_before(stage):
            print(f"Reusing {stage.output} from an earlier demo (--fresh redoes it).", flush=True)
            return
        # Whatever this stage writes is new, so every later stage has to be redone too.
        self.redo = True
        if stage.output.is_dir():
            shutil.rmtree(stage.output)
        else:
            stage.output.unlink(missing_ok=True)
        (self.records / f"{stage.name}.json").unlink(missing_ok=True)
        print("$ " + " ".join(stage.command), flush=True)
        result = subprocess.run(stage.command, env=self.env, cwd=REPOSITORY)
        if result.returncode != 0:
            raise In2nError(
                f"The demo stopped at stage {number} ({stage.title}): the command exited with code "
                f"{result.returncode}; its output above says why. Finished stages are reused when the demo runs "
                "again."
            )
        self.records.mkdir(parents=True, exist_ok=True)
        (self.records / f"{stage.name}.json").write_text(json.dumps({"command": stage.command}, indent=2) + "\n")
        self.ran.append(stage.name)


def run_demo(config: DemoConfig) -> DemoResult:
    """Runs (or reuses) every stage and prints where the results are."""
    config = dataclasses.replace(config, output_dir=config.output_dir.resolve())
    config.output_dir.mkdir(parents=True, exist_ok=True)
    editor = choose_editor(config.ip2p_model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lpips_env, lpips_note = lpips_environment(config.output_dir)
    print(f"Editor: {editor.editor}, because {editor.reason}.\n{lpips_note}", flush=True)
    # The dependencies' deprecation warnings are pages long on this stack, and nothing the user can act on.
    quiet = {"PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning"}
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "disabled"), **quiet, **lpips_env}
    plan = stages(config, editor.editor, device)
    runner = StageRunner(config.output_dir / "stages", len(plan), config.fresh, env)
    for number, stage in enumerate(plan, start=1):
        runner.run(number, stage)
    scene, nerfacto, edited, renders, plot = (stage.output for stage in plan)
    result = DemoResult(editor, scene, nerfacto, edited, renders, plot, runner.ran)
    elapsed = time.perf_counter() - runner.started
    print_summary(result, elapsed)
    return result


def print_summary(result: DemoResult, seconds: float) -> None:
    editor = "InstructPix2Pix" if result.editor.editor == "ip2p" else "the negative editor (prompt ignored)"
    print(
        f"\n=== Done in {minutes(seconds)} (edited with {editor})\n"
        f"Before/after (original left, edited right):\n"
        f"  still  {result.renders / STILL_NAME}\n"
        f"  video  {result.renders / VIDEO_NAME}\n"
        f"  frames {result.renders / 'original'}, {result.renders / 'edited'}\n"
        f"The edit's progress (agreement of each edit with the scene, pass by pass):\n"
        f"  plot   {result.progress_plot}\n"
        f"Runs:\n"
        f"  original  {result.nerfacto_run}\n"
        f"  edited    {result.edited_run}\n"
        f"Look at the edited scene (then open http://localhost:7007):\n"
        f"  {BIN / 'ns-viewer'} --load-config {result.edited_run / 'config.yml'}",
        flush=True,
    )


def main() -> None:
    run_demo(tyro.cli(DemoConfig))


if __name__ == "__main__":
    main()
