"""The viewer in a real headless Chromium: `ns-viewer` on a finished in2n run, and `ns-train in2n`'s own viewer.

`ns-viewer` must serve the edited scene from the checkpoint without building the diffusion model or reading the
AlexNet file, and its panel must show the finished edit read-only (prompt, guidance, edits, the step it ended at).
While `ns-train` edits, the panel holds the live controls, and a prompt typed there reaches the edit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.browser import Chromium
from tests.conftest import in2n_args, in2n_run_dir, ns
from tests.processes import (
    free_port,
    group_alive,
    processes_mentioning,
    start_process_group,
    stop_process_group,
    tail,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.e2e

SUMMARY_LABELS = ("Instruct-NeRF2NeRF", "Edit prompt", "Guidance (text, image)", "Edits made", "Ended at step")
LIVE_LABELS = ("Pause edits", "Reset edit", "Text guidance")
"""Controls of a running edit, which a finished run's panel must not offer."""
LIVE_CONTROL_LABELS = ("Instruct-NeRF2NeRF", "Edit prompt", "Text guidance", "Image guidance", "Pause edits",
                       "Reset edit", "Edit progress")  # fmt: skip
PROMPT = "make the spheres look like bronze"
GUIDANCE, IMAGE_GUIDANCE = 6.25, 1.75

VIEWER_START_TIMEOUT = 600  # loading the pipeline takes seconds alone, minutes on a busy CPU
RENDER_TIMEOUT = 300

CANVAS_POINTS = """(() => {
  const points = [];
  for (let y = 4; y < innerHeight; y += 8)
    for (let x = 4; x < innerWidth; x += 8) {
      const element = document.elementFromPoint(x, y);
      if (element && element.tagName === "CANVAS") points.push([x, y]);
    }
  return points;
})()"""
"""Points on a grid where the 3D canvas is visible (not covered by the panel, title bar or other UI)."""

NEXT_FRAMES = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => done(true))))"

RESOLUTION = r"""(() => {
  const match = document.body.innerText.match(/Resolution: (\d+)\D(\d+)px/);
  return match && Number(match[1]) > 0 && Number(match[2]) > 0 ? match[0] : null;
})()"""
"""The size of the last image the viewer rendered, from the panel's stats, once one arrived."""

INPUT_VALUES = "[...document.querySelectorAll('input, textarea')].map(element => element.value)"


def viewer_config(run: Path, folder: Path) -> Path:
    """The run's config, asking for InstructPix2Pix from a folder that does not exist (with the hub offline):
    a viewer that built the editor could not start. Also another prompt and guidance than the edit used: the panel
    must show the edit's, from the checkpoint."""
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.method_name == "in2n" and config.pipeline.editor == "negative"
    config.pipeline.editor = "ip2p"
    config.pipeline.ip2p_model = str(folder / "no-such-ip2p-model")
    config.pipeline.prompt = PROMPT
    config.pipeline.guidance_scale = GUIDANCE
    config.pipeline.image_guidance_scale = IMAGE_GUIDANCE
    path = folder / "config.yml"
    path.write_text(yaml.dump(config))  # ns-viewer loads the checkpoint from the run folder the config names
    return path


def canvas_samples(browser: Chromium, screenshot: Path) -> np.ndarray:
    """RGB values [N, 3] of the screenshot at the grid points where the 3D canvas is visible."""
    points = np.array(browser.evaluate(CANVAS_POINTS), dtype=int).reshape(-1, 2)
    assert len(points) > 1000, f"the 3D canvas is hardly visible ({len(points)} grid points)"
    image = np.asarray(Image.open(screenshot).convert("RGB")).astype(np.float32)
    return image[points[:, 1], points[:, 0]]


def coverage(samples: np.ndarray) -> Dict[str, float]:
    """How much of the canvas one flat colour covers (the background of an empty scene covers nearly all of it,
    an image of the scene drawn behind it covers it with many colours), and the spread of the pixel values."""
    keys = (samples // 16).astype(int) @ np.array([256, 16, 1])
    _, counts = np.unique(keys, return_counts=True)
    return {"dominant_colour_fraction": counts.max() / len(samples), "std": float(samples.std(axis=0).mean())}


def test_ns_viewer_shows_the_edited_scene_and_the_finished_edit(negative_run: Path, tmp_path: Path):
    config = viewer_config(negative_run, tmp_path)
    checkpoint = torch.load(max((negative_run / "nerfstudio_models").glob("step-*.ckpt")), weights_only=True)
    edit = checkpoint["in2n"]
    port = free_port()
    viewer_log = tmp_path / "ns-viewer.log"
    with open(viewer_log, "w") as log:
        # Without the AlexNet file nerfacto's LPIPS is built from (and the hub offline): the viewer needs neither.
        no_weights = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home-without-alexnet")}
        viewer = start_process_group(
            [ns("ns-viewer"), "--load-config", config,
             "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", port],
            log, cwd=tmp_path, env=no_weights,
        )  # fmt: skip
    browser = Chromium(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        wait_for_port(port, viewer, timeout=VIEWER_START_TIMEOUT, log=viewer_log)
        with browser:
            # The same page, its websocket pointed at a port nobody listens on: the canvas with no scene.
            browser.navigate(f"http://127.0.0.1:{port}/?websocket=ws://127.0.0.1:{free_port()}")
            browser.wait_for("document.body.innerText.includes('Connecting')", 60, "the viewer page to load")
            browser.wait_for("document.querySelector('canvas') !== null", 60, "the 3D canvas")
            browser.evaluate(NEXT_FRAMES)
            empty_shot = browser.screenshot(tmp_path / "viewer-without-server.png")
            empty = coverage(canvas_samples(browser, empty_shot))

            browser.navigate(f"http://127.0.0.1:{port}/")
            browser.wait_for(
                "document.body.innerText.includes('Connected')", 120, "the viewer to connect",
                on_timeout=lambda: f"page text: {browser.text()!r}{tail(viewer_log)}",
            )  # fmt: skip
            labels = " && ".join(f"document.body.innerText.includes({label!r})" for label in SUMMARY_LABELS)
            browser.wait_for(labels, 60, "the edit's summary", on_timeout=lambda: f"page text: {browser.text()!r}")
            resolution = browser.wait_for(
                RESOLUTION, RENDER_TIMEOUT, "a rendered image",
                on_timeout=lambda: f"page text: {browser.text()!r}{tail(viewer_log)}",
            )  # fmt: skip
            # Take the train cameras (thumbnails of the dataset) out of the picture: what is left is the render.
            browser.evaluate(
                "[...document.querySelectorAll('button')].find(b => b.innerText.includes('Hide Train Cams')).click()"
            )
            browser.wait_for("document.body.innerText.includes('Show Train Cams')", 30, "the train cameras to hide")
            time.sleep(0.5)
            browser.evaluate(NEXT_FRAMES)
            scene_shot = browser.screenshot(tmp_path / "viewer.png")
            scene = coverage(canvas_samples(browser, scene_shot))
            page_text = browser.text()
            input_values = browser.evaluate(INPUT_VALUES)
    finally:
        browser.close()
        stop_process_group(viewer)

    nothing_left = not group_alive(viewer.pid) and not group_alive(browser.process.pid)
    assert nothing_left and not processes_mentioning(str(tmp_path)), "the viewer or the browser is still running"
    log_text = viewer_log.read_text(errors="replace")
    assert "editing with" not in log_text and "InstructPix2Pix" not in log_text, log_text[-3000:]
    assert f"127.0.0.1:{port}" in log_text, log_text[-3000:]

    for label in SUMMARY_LABELS:
        assert label in page_text, f"{label!r} missing from the panel: {page_text!r}"
    for label in LIVE_LABELS:
        assert label not in page_text, f"a finished run offers {label!r}: {page_text!r}"
    edits, passes = edit["schedule"]["views_edited"], edit["schedule"]["passes_completed"]
    expected = [edit["prompt"], "7.5, 1.5", f"{edits} edits of 18 views, {passes} full passes", str(checkpoint["step"])]
    assert all(value in input_values for value in expected), (expected, input_values)
    assert PROMPT not in input_values and edit["prompt"] != PROMPT
    assert "Connected" in page_text and resolution

    assert empty["dominant_colour_fraction"] > 0.9, f"the empty canvas should be one colour: {empty} ({empty_shot})"
    assert scene["dominant_colour_fraction"] < 0.5 and scene["std"] > 10, (
        f"the canvas does not show a rendered scene: {scene} vs empty {empty} ({scene_shot}, {resolution})"
    )


def test_ns_train_s_viewer_holds_the_live_controls_and_a_new_prompt_reaches_the_edit(
    nerfacto_run: Path, scene: Path, workdir: Path, tmp_path: Path
):
    """The controls of a running edit, in the viewer of `ns-train in2n`: typing a prompt there changes the prompt the
    edit loop uses, which every checkpoint records."""
    port = free_port()
    log_path = tmp_path / "ns-train.log"
    args = [arg for arg in in2n_args(nerfacto_run, workdir, "live") if arg not in ("--vis", "tensorboard")]
    with open(log_path, "w") as log:
        trainer = start_process_group(
            [*args, "--vis", "viewer", "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", port,
             "--max-num-iterations", "5000", "--steps-per-save", "3", "--pipeline.editor", "negative",
             "--pipeline.edit-rate", "1", "--pipeline.prompt", PROMPT, "nerfstudio-data", "--data", scene],
            log, cwd=workdir,
        )  # fmt: skip
    models = in2n_run_dir(workdir, "live") / "nerfstudio_models"
    new_prompt = "make the box look like gold"
    browser = Chromium(tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        wait_for_port(port, trainer, timeout=VIEWER_START_TIMEOUT, log=log_path)
        with browser:
            browser.navigate(f"http://127.0.0.1:{port}/")
            labels = " && ".join(f"document.body.innerText.includes({label!r})" for label in LIVE_CONTROL_LABELS)
            browser.wait_for(labels, 180, "the live controls", on_timeout=lambda: f"page text: {browser.text()!r}")
            browser.wait_for(f"{INPUT_VALUES}.includes({PROMPT!r})", 60, "the prompt in its field")
            # Text fields show their value in an input element, not as the page's text.
            browser.wait_for(f"{INPUT_VALUES}.some(value => value.includes('edits, '))", 300, "the edit's progress")
            # Type the new prompt into the prompt's field, as a user does.
            browser.evaluate(
                f"(() => {{ const field = [...document.querySelectorAll('input, textarea')]"
                f".find(e => e.value === {PROMPT!r}); field.focus(); field.select(); return true; }})()"
            )
            browser.send("Input.insertText", text=new_prompt)
            for kind in ("keyDown", "keyUp"):
                browser.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

            def saved_prompt() -> bool:
                found = sorted(models.glob("step-*.ckpt")) if models.is_dir() else []
                return bool(found) and torch.load(found[-1], weights_only=True)["in2n"]["prompt"] == new_prompt

            wait_until(saved_prompt, trainer, 300, "a checkpoint with the prompt typed in the viewer", log_path)
            page_text = browser.text()
    finally:
        browser.close()
        stop_process_group(trainer)
    assert "Instruct-NeRF2NeRF" in page_text and "Edits made" not in page_text, "the live controls, not the summary"
    assert "Traceback" not in log_path.read_text(errors="replace")
