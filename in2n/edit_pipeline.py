"""What every in2n pipeline adds to nerfstudio's, whatever the scene is made of (a NeRF or Gaussian splats).

The options of the editor and of the edit loop, checked before anything slow; the edit loop run before every training
step; the viewer's panel and its summary in checkpoints; the callbacks; LPIPS for the edit's progress. A pipeline for
one kind of scene adds how a training view is rendered for an edit, where its training images are, and the training
step itself (in2n.pipeline for nerfacto, in2n.splat.pipeline for splatfacto).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Dict, Iterator, List, Literal, Optional

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor, nn

from in2n.console import notice, notice_once
from in2n.data.training_images import TrainingImages
from in2n.dataset_update.loop import EditLoop, EditLoopConfig, Perceptual, ViewRender
from in2n.distributed import Ranks
from in2n.editors.base import Editor
from in2n.editors.factory import EditorConfig, EditorFactory, build_editor
from in2n.editors.sizing import edit_size
from in2n.process import prepare_process
from in2n.validation import dataset_problems, edit_problems, editor_problems, raise_problems
from in2n.viewer_panel import PANEL_NAME, PANEL_STATE_KEY, EditSummaryPanel, LiveEditPanel

MIN_LPIPS_SIDE = 32
"""AlexNet, under LPIPS, pools an image down five times; smaller images have no features left to compare."""


@dataclass
class EditPipelineConfig(VanillaPipelineConfig, EditorConfig, EditLoopConfig):
    """nerfstudio's pipeline options, with the editor's and the edit loop's (`--pipeline.*`)."""

    def check(self) -> None:
        """Raise an In2nError naming every option that cannot give an edit, and what to change."""
        raise_problems(
            edit_problems(self, prompt_needed=self.editor == "ip2p")
            + editor_problems(self)
            + self.scene_problems()
            + dataset_problems(self.datamanager)
        )

    def scene_problems(self) -> List[str]:
        """Problems with the options of the scene's own kind (its model and datamanager)."""
        return []

    def several_devices_problem(self) -> Optional[str]:
        """Why this kind of scene cannot train on several devices (`--machine.num-devices`), if it cannot."""
        return None


class EditPipeline(VanillaPipeline):
    """nerfstudio's pipeline, interleaved with edits of its training views.

    Only training (test_mode "val") builds the editor and the edit loop; `ns-render` and `ns-viewer` set the pipeline
    up in "test" or "inference" mode and never load the diffusion model.

    Args:
        editor_factory: builds the editor from the training device; default: the one the options ask for.
    """

    config: EditPipelineConfig

    def __init__(
        self,
        config: EditPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[Any] = None,
        editor_factory: Optional[EditorFactory] = None,
    ) -> None:
        prepare_process()  # ns-render and ns-viewer build the pipeline before loading the run's checkpoint
        if test_mode == "val":
            config.check()
        self.check_device(device)
        # On several devices, Ranks.join below puts the model in DDP (nerfstudio's own wrapping is CUDA-only).
        super().__init__(config, device, test_mode, 1, local_rank, grad_scaler)
        self._grad_scaler = grad_scaler
        # Neither the loop nor the editor is a submodule: the diffusion weights must never reach state_dict().
        self.edit_loop: Optional[EditLoop] = None
        panel: nn.Module = EditSummaryPanel()
        if test_mode == "val":
            if config.edit_masks == "dataset":
                self.datamanager.use_masks_for_edits()
            editor = (editor_factory or partial(build_editor, config))(device)
            notice_oversize_views(editor, self.training_images)
            self.edit_loop = EditLoop(
                config,
                editor,
                self.render_for_edit,
                self.training_images,
                self.model,
                training_device=device,
                perceptual=self.perceptual(),
            )
            notice(self.edit_loop.describe())
            panel = LiveEditPanel(self.edit_loop)
        # Registered under its title, which the viewer shows as the section's name.
        self.add_module(PANEL_NAME, panel)
        self.ranks: Optional[Ranks] = None
        if world_size > 1:  # several devices: each process trains on and edits its share (in2n.distributed)
            self.ranks = Ranks.join(self, world_size, panel)

    # ------------------------------------------------------------------------------------------------------------
    # What a kind of scene provides.

    def check_device(self, device: str) -> None:
        """Raise an In2nError if the scene cannot run on `device` (before the data and the editor load)."""

    @property
    def training_images(self) -> TrainingImages:
        """The training images the edits overwrite, row i being training view i."""
        return self.datamanager.training_images

    def render_for_edit(self, view: int, with_points: bool = False) -> ViewRender:
        """Training view `view` rendered as the model sees it in training (its own learned pose correction and
        appearance), RGB [H, W, 3] in [0, 1]; with `with_points`, each pixel's surface point in the trained frame."""
        raise NotImplementedError

    def lpips_network(self) -> Optional[nn.Module]:
        """The model's LPIPS network (its weights come with the checkpoint), or None to record no LPIPS."""
        return None

    def train_step(self, step: int):
        """The training step itself, once the edits due before it are written: nerfstudio's."""
        return super().get_train_loss_dict(step)

    def after_load(self) -> None:
        """Called once the checkpoint an edit starts or resumes from is loaded."""

    # ------------------------------------------------------------------------------------------------------------
    # Shared by every kind of scene.

    @property
    def _panel(self) -> nn.Module:
        return self._modules[PANEL_NAME]

    def get_train_loss_dict(self, step: int):
        if self.edit_loop is not None:
            # nerfstudio's trainer runs this under autocast; the editor runs in the precision its options name.
            with without_autocast():
                self.edit_loop.before_step(step)
        return self.train_step(step)

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        # A plain nerfstudio checkpoint holds no summary of an edit, nor does one of an in2n version without the panel.
        super().load_pipeline({PANEL_STATE_KEY: {}, **loaded_state}, step)
        if isinstance(self._panel, EditSummaryPanel):
            self._panel.show(self._panel.get_extra_state(), step)

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        # The final checkpoint (saved just before AFTER_TRAIN) holds the edits in flight; nothing else needs them.
        return callbacks + [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], self.stop_edits)]

    def stop_edits(self, step: Optional[int] = None) -> None:
        """Drop the edits in flight and stop the edit worker thread."""
        if self.edit_loop is not None:
            self.edit_loop.close()

    def render_view(self, view: int) -> Tensor:
        """Render training view `view` as the model sees it in training. Returns RGB [H, W, 3] in [0, 1]."""
        return self.render_for_edit(view).rgb

    def perceptual(self) -> Optional[Perceptual]:
        return self.lpips_distance if self.lpips_network() is not None else None

    @torch.no_grad()
    def lpips_distance(self, a: Tensor, b: Tensor) -> Tensor:
        """The model's LPIPS between two batches [B, 3, H, W] in [0, 1]: [B] (NaN for images too small for it)."""
        network = self.lpips_network()
        if network is None or min(a.shape[-2:]) < MIN_LPIPS_SIDE:
            return torch.full((a.shape[0],), math.nan)
        device = self.device
        return network(a.to(device), b.to(device), normalize=True).flatten().cpu()


def notice_oversize_views(editor: Editor, images: TrainingImages) -> None:
    """Say once when training views are larger than the editor's edit size: they are edited smaller and scaled back."""
    max_edit_size = getattr(editor, "max_edit_size", None)
    if max_edit_size is None:
        return
    sizes = [images.image_size(view) for view in range(images.num_views)]
    height, width = max(sizes, key=max)
    if max(height, width) <= max_edit_size:
        return
    edit_height, edit_width = edit_size(height, width, max_edit_size, editor.vae_scale_factor)
    notice_once(
        f"views of up to {width}x{height} px are larger than --pipeline.max-edit-size {max_edit_size} px on the long "
        f"side: they are edited at that size (e.g. {edit_width}x{edit_height}) and scaled back ({editor.describe()} "
        f"works best at {editor.family.native_size} px and runs out of memory far above it)."
    )


@contextmanager
def without_autocast() -> Iterator[None]:
    """Turn off any autocast of the calling thread (CUDA's and the CPU's)."""
    with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        yield
