"""Building in2n pipelines in-process on the generated scene, with the small CPU model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal, Optional

from torch import nn

from in2n.editors.base import Editor
from in2n.method_configs import in2n_big, in2n_lite
from in2n.pipeline import In2nPipeline, In2nPipelineConfig
from in2n.synthetic.cpu_preset import SMALL_MODEL
from in2n.viewer_panel import PANEL_NAME


def pipeline_config(scene: Path, lite: bool = False, **options) -> In2nPipelineConfig:
    """An in2n (or in2n-lite) pipeline config for the scene; `options` override pipeline fields."""
    config = copy.deepcopy((in2n_lite if lite else in2n_big).config.pipeline)
    config.datamanager.data = scene
    config.datamanager.train_num_rays_per_batch = 1024
    for key, value in SMALL_MODEL.items():
        setattr(config.model, key, value)
    for key, value in options.items():
        setattr(config, key, value)
    return config


def make_pipeline(
    scene: Path,
    test_mode: Literal["val", "test", "inference"] = "val",
    lite: bool = False,
    with_editor: Optional[Editor] = None,
    **options,
) -> In2nPipeline:
    """A pipeline on the CPU, handed `with_editor` if given; otherwise it builds the editor its options name (the
    negative editor unless `editor="ip2p"` is among them)."""
    options.setdefault("editor", "negative")
    factory = None if with_editor is None else (lambda device: with_editor)
    pipeline = pipeline_config(scene, lite=lite, **options).setup(
        device="cpu", test_mode=test_mode, editor_factory=factory
    )
    pipeline.train()
    return pipeline


def panel(pipeline: In2nPipeline) -> nn.Module:
    """The pipeline's section of the viewer's control panel."""
    return getattr(pipeline, PANEL_NAME)
