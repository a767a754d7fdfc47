"""`ns-viewer` on an in2n run, looked at in a real headless Chromium.

The viewer must serve the edited scene from the checkpoint without building the diffusion model, and its panel
must hold the edit's controls (they are scanned from the pipeline).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.browser import Chromium
from tests.conftest import ns
from tests.processes import (
    free_port,
    group_alive,
    processes_mentioning,
    start_process_group,
    stop_process_group,
    tail,
    wait_for_port,
)

pytestmark = pytest.mark.e2e

CONTROL_LABELS = ("Edit prompt", "Text guidance", "Image guidance", "Pause edits", "Reset edit", "Edit progress")
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
    a viewer that built the editor could not start. Also a distinctive prompt and guidance for the panel."""
    config = yaml.load((run / "config.yml").read_text(), Loader=yaml.Loader)
    assert config.method_name == "in2n" and config.pipeline.editor == "reference"
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


def test_ns_viewer_shows_the_edited_scene_and_the_edit_controls(reference_run: Path, tmp_path: Path):
    config = viewer_config(reference_run, tmp_path)
    port = free_port()
    viewer_log = tmp_path / "ns-viewer.log"
    with open(viewer_log, "w") as log:
        viewer = start_process_group(
            [ns("ns-viewer"), "--load-config", config,
             "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", port],
            log, cwd=tmp_path,
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
            labels = " && ".join(f"document.body.innerText.includes({label!r})" for label in CONTROL_LABELS)
            browser.wait_for(labels, 60, "the edit controls", on_timeout=lambda: f"page text: {browser.text()!r}")
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

    for label in CONTROL_LABELS:
        assert label in page_text, f"{label!r} missing from the panel: {page_text!r}"
    assert PROMPT in input_values, input_values
    assert str(GUIDANCE) in input_values and str(IMAGE_GUIDANCE) in input_values, input_values
    assert "Connected" in page_text and resolution

    assert empty["dominant_colour_fraction"] > 0.9, f"the empty canvas should be one colour: {empty} ({empty_shot})"
    assert scene["dominant_colour_fraction"] < 0.5 and scene["std"] > 10, (
        f"the canvas does not show a rendered scene: {scene} vs empty {empty} ({scene_shot}, {resolution})"
    )
