"""Controls of the edit in the nerfstudio viewer's panel.

The viewer collects ViewerElements from the pipeline's public attributes and nn.Module children only, so
they live on this (parameter-free) module, which the pipeline holds as `edit_controls`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerNumber, ViewerText
from torch import nn

if TYPE_CHECKING:
    from in2n.pipeline import In2nPipelineConfig
    from in2n.schedule import EditSchedule


class EditControls(nn.Module):
    """Prompt and guidance editable while training (applied from the next edit), pause, reset, progress."""

    def __init__(self, config: In2nPipelineConfig, on_reset: Callable[[], None]) -> None:
        super().__init__()
        self.prompt = ViewerText(name="Edit prompt", default_value=config.prompt, hint="The instruction")
        self.guidance_scale = ViewerNumber(name="Text guidance", default_value=config.guidance_scale)
        self.image_guidance_scale = ViewerNumber(name="Image guidance", default_value=config.image_guidance_scale)
        self.pause_edits = ViewerCheckbox(name="Pause edits", default_value=False)
        self.reset = ViewerButton(name="Reset edit", cb_hook=lambda _: on_reset())
        self.progress = ViewerText(name="Edit progress", default_value="no views edited yet", disabled=True)

    @property
    def paused(self) -> bool:
        return bool(self.pause_edits.value)

    def show_progress(self, schedule: EditSchedule, views_changed: int, num_views: int) -> None:
        self.progress.value = (
            f"{schedule.views_edited} edits, {views_changed}/{num_views} views changed, "
            f"pass {schedule.passes_completed + 1} ({schedule.position}/{num_views})"
        )

    def forward(self) -> None:
        raise NotImplementedError("EditControls holds viewer elements; it computes nothing")
