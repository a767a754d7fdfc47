"""scripts/demo.py: which editor and LPIPS weights it picks, how it reuses stages, and a short demo end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, List

import mediapy
import numpy as np
import pytest
import torch
from PIL import Image

from in2n.editors.loading import DEFAULT_IP2P_MODEL
from in2n.errors import In2nError
from in2n.model import alexnet_weights_path
from in2n.tools.compare import STILL_NAME, VIDEO_NAME
from in2n.tools.plot import PLOT_NAME
from tests.helpers import flat, import_script, short_orbit

ROOT = Path(__file__).resolve().parents[1]
DEMO_SCRIPT = ROOT / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    return import_script(DEMO_SCRIPT)


@pytest.fixture
def with_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_without_cuda_the_negative_editor_is_used(demo: ModuleType, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = demo.choose_editor(DEFAULT_IP2P_MODEL)
    assert choice.editor == "negative" and "no CUDA GPU" in choice.reason


def test_with_cuda_instruct_pix2pix_is_used_when_its_weights_can_be_had(
    demo: ModuleType, with_cuda: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    assert demo.choose_editor(str(tmp_path)).editor == "ip2p"
    choice = demo.choose_editor(str(tmp_path / "missing-folder"))
    assert choice.editor == "negative" and "is not a folder" in choice.reason

    monkeypatch.setattr(demo, "_ip2p_in_cache", lambda model: True)
    assert demo.choose_editor(DEFAULT_IP2P_MODEL).editor == "ip2p"

    monkeypatch.setattr(demo, "_ip2p_in_cache", lambda model: False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    choice = demo.choose_editor(DEFAULT_IP2P_MODEL)
    assert choice.editor == "negative" and "HF_HUB_OFFLINE" in choice.reason

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    for reachable, editor in ((True, "ip2p"), (False, "negative")):
        monkeypatch.setattr(demo, "reachable", lambda url, answer=reachable: answer)
        assert demo.choose_editor(DEFAULT_IP2P_MODEL).editor == editor


def test_random_lpips_weights_only_when_the_real_ones_cannot_be_had(
    demo: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # The session's TORCH_HOME holds an AlexNet file, which counts as the real one.
    env, note = demo.lpips_environment(tmp_path)
    assert env == {} and str(alexnet_weights_path()) in note

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(demo, "reachable", lambda url: True)
    env, note = demo.lpips_environment(tmp_path)
    assert env == {} and "downloads" in note

    monkeypatch.setattr(demo, "reachable", lambda url: False)
    env, note = demo.lpips_environment(tmp_path)
    assert alexnet_weights_path(Path(env["TORCH_HOME"])).is_file()
    assert "RANDOM AlexNet weights" in note and "not a real edit" in note


def test_unreachable_servers_answer_false(demo: ModuleType):
    assert demo.reachable("https://127.0.0.1", timeout=2.0) is False


@pytest.mark.e2e
def test_stages_are_reused_until_one_changes(demo: ModuleType, tmp_path: Path):
    def stage(name: str, text: str, code: str = "") -> Any:
        folder = tmp_path / name
        write = f"import pathlib; p = pathlib.Path({str(folder)!r}); p.mkdir(); (p / 'text').write_text({text!r})"
        return demo.Stage(name, f"write {name}", [sys.executable, "-c", code or write], folder)

    def run_stages(texts: str, fresh: bool = False) -> List[str]:
        plan = [stage(name, text) for name, text in zip("abc", texts, strict=True)]
        runner = demo.StageRunner(tmp_path / "records", len(plan), fresh, dict(os.environ))
        for number, planned in enumerate(plan, start=1):
            runner.run(number, planned)
        return runner.ran

    assert run_stages("111") == ["a", "b", "c"]
    assert run_stages("111") == []
    assert run_stages("121") == ["b", "c"], "a changed stage and every later one run again"
    assert (tmp_path / "b" / "text").read_text() == "2"
    assert run_stages("121", fresh=True) == ["a", "b", "c"]

    runner = demo.StageRunner(tmp_path / "records", 1, False, dict(os.environ))
    with pytest.raises(In2nError, match="stopped at stage 1"):
        runner.run(1, stage("a", "3", code="raise SystemExit(3)"))
    assert run_stages("121") == ["a", "b", "c"], "a failed stage leaves no record"


@pytest.mark.e2e
def test_make_demo_writes_what_it_reports_and_reuses_it(tmp_path: Path):
    """The README's `make demo`, shortened through DEMO_ARGS, on a machine offline and without the AlexNet weights."""
    output = tmp_path / "demo"
    args = (
        f"--nerfacto-steps 30 --edit-steps 6 --camera-path {short_orbit(tmp_path / 'orbit.json')} --render-width 96 "
        f"--output-dir {output}"
    )
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "no-weights"), "HF_HUB_OFFLINE": "1"}
    command = ["make", "-C", str(ROOT), "demo", f"DEMO_ARGS={args}"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    printed = flat(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert "Editor: negative, because there is no CUDA GPU" in printed and "RANDOM AlexNet weights" in printed
    titles = ["Generate the scene", "Train nerfacto (30 steps)", "Edit it with the negative", "Render before and after",
              "Plot the edit's progress"]  # fmt: skip
    for number, title in enumerate(titles):
        assert f"=== [{number + 1}/5] {title}" in printed
    renders = output / "before_after"
    for path in (renders / STILL_NAME, renders / VIDEO_NAME, renders / PLOT_NAME):
        assert path.is_file() and str(path) in printed, path
    still = np.asarray(Image.open(renders / STILL_NAME))
    assert still.shape[1] == 2 * 96, "both runs side by side, each at the width asked for"
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "Warning:" in line]
    assert warnings == [], "the dependencies' warnings are kept off the console"
    edited_run = output / "outputs" / "scene" / "in2n" / "demo"
    for run_dir in (output / "outputs" / "scene" / "nerfacto" / "demo", edited_run):
        assert (run_dir / "config.yml").is_file() and str(run_dir) in printed, run_dir
    assert f"ns-viewer --load-config {edited_run / 'config.yml'}" in printed
    assert mediapy.read_video(renders / VIDEO_NAME).shape[0] == 6

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and flat(again.stdout).count("Reusing") == 5
