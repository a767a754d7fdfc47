"""--pipeline.compile-editor: the compiled UNet edits as the eager one does, and a compile that fails falls back to
eager edits with one notice. Compiling runs the real torch.compile (inductor, with the machine's gcc)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from in2n.editors.base import EditSettings
from in2n.editors.factory import EditorConfig, build_editor
from in2n.editors.ip2p import InstructPix2PixEditor
from tests.helpers import flat, random_images

SETTINGS = EditSettings(diffusion_steps=3)
SEEDS = [1, 2]
"""Two views whose schedules have the same length: every step has the same shapes, so the UNet compiles once."""

COMPILED_TOLERANCE = 1e-4
"""Largest difference, in [0, 1] pixel values, allowed between compiled and eager edits. The compiled UNet fuses
operations and reorders fp32 sums (attention, normalisation), so it rounds differently: on this edit the difference
measured 3.8e-6 on a 2-core x86 CPU. 1e-4 leaves room for CPUs with other vector widths and still tells another edit
apart: moving the text guidance from 7.5 to 7.49 changes this edit by 4e-4."""


@pytest.fixture(autouse=True)
def fresh_compiles() -> Iterator[None]:
    """Each test compiles anew: dynamo reuses a UNet's compiled graph for another UNet of the same architecture."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def edit(editor: InstructPix2PixEditor) -> torch.Tensor:
    renders, originals = random_images(2, 0), random_images(2, 1)
    return editor.edit(renders, originals, [0, 1], "make it red", SETTINGS, SEEDS)


def test_compiled_edits_agree_with_eager_ones(tiny_ip2p: Path, capsys: pytest.CaptureFixture) -> None:
    eager = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))
    compiled = build_editor(EditorConfig(ip2p_model=str(tiny_ip2p), compile_editor=True), "cpu")
    assert compiled.describe().endswith("(fp32 on cpu, compiled)")
    expected, result = edit(eager), edit(compiled)
    assert compiled.compiled_unet is not None and compiled.compiled_unet.is_compiled, "it did not fall back"
    assert "Compiling" not in capsys.readouterr().out
    torch.testing.assert_close(result, expected, atol=COMPILED_TOLERANCE, rtol=0)


def test_a_failing_compile_falls_back_to_eager_with_one_notice(tiny_ip2p: Path, capsys: pytest.CaptureFixture) -> None:
    eager = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"))
    compiled = InstructPix2PixEditor(str(tiny_ip2p), torch.device("cpu"), compile_unet=True)
    # No C++ compiler, and no compiled graph from an earlier test to load from the cache instead.
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",), "fx_graph_cache": False}):
        first, second = edit(compiled), edit(compiled)
    assert compiled.compiled_unet is not None and not compiled.compiled_unet.is_compiled
    assert torch.equal(first, edit(eager)) and torch.equal(second, first)
    out = flat(capsys.readouterr().out)
    assert out.count("Compiling the InstructPix2Pix UNet failed") == 1
    assert "No working C++ compiler" in out and "it runs uncompiled from now on" in out
