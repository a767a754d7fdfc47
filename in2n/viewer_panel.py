"""The "Instruct-NeRF2NeRF" section of the nerfstudio viewer's control panel.

While `ns-train` edits, it holds the live controls: prompt and guidance (applied from the next edit), pause, Reset,
and the edit's progress. On a finished run (`ns-viewer`, or `ns-render`'s pipeline) it shows the edit read-only:
prompt, guidance, edits made, passes, and the step the run ended at, from the checkpoint.

The viewer collects ViewerElements from the pipeline's public attributes and nn.Module children only, and names the
section after the attribute, so the panel is a (parameter-free) module the pipeline adds under PANEL_NAME. The
summary travels in the pipeline's state dict as the panel's extra state, so a finished run's checkpoint carries it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Protocol

from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerCheckbox, ViewerNumber, ViewerText
from torch import nn

from in2n.dataset_update.loop import EditLoop, EditSummary, LiveSettings

PANEL_NAME = "Instruct-NeRF2NeRF"
"""The section's title in the viewer, and the panel's name among the pipeline's modules."""
PANEL_STATE_KEY = f"{PANEL_NAME}._extra_state"
"""Where the summary is in the pipeline's state dict."""


class LiveControls(Protocol):
    """Where the controls write: the edit loop itself, or on several devices what the processes read together at the
    start of a step (in2n.distributed.SharedControls)."""

    live: LiveSettings

    def request_reset(self) -> None: ...


class LiveEditPanel(nn.Module):
    """The controls of a running edit. They write into the loop's live settings: the loop, not a widget, holds the
    values, so a run without the viewer behaves the same."""

    def __init__(self, loop: EditLoop) -> None:
        super().__init__()
        self._loop = loop
        self.controls: LiveControls = loop
        """Where the controls write (the loop's live settings and its Reset)."""
        live = loop.live
        self.prompt = ViewerText(
            name="Edit prompt", default_value=live.prompt, hint="The instruction", cb_hook=self._set_prompt
        )
        self.guidance_scale = ViewerNumber(
            name="Text guidance", default_value=live.guidance_scale, cb_hook=self._set_guidance
        )
        self.image_guidance_scale = ViewerNumber(
            name="Image guidance", default_value=live.image_guidance_scale, cb_hook=self._set_image_guidance
        )
        self.pause_edits = ViewerCheckbox(name="Pause edits", default_value=live.paused, cb_hook=self._set_paused)
        self.reset = ViewerButton(name="Reset edit", cb_hook=self._request_reset)
        self.progress = ViewerText(name="Edit progress", default_value="no views edited yet", disabled=True)
        loop.add_listener(self.show)

    def _set_prompt(self, element: ViewerText) -> None:
        self.controls.live.prompt = element.value

    def _set_guidance(self, element: ViewerNumber) -> None:
        self.controls.live.guidance_scale = float(element.value)

    def _set_image_guidance(self, element: ViewerNumber) -> None:
        self.controls.live.image_guidance_scale = float(element.value)

    def _set_paused(self, element: ViewerCheckbox) -> None:
        self.controls.live.paused = bool(element.value)

    def _request_reset(self, element: ViewerButton) -> None:
        self.controls.request_reset()
        self.progress.value = "reset requested: applied before the next training step"

    def show(self, summary: EditSummary) -> None:
        self.progress.value = summary.progress_text()

    def get_extra_state(self) -> Dict[str, Any]:
        return self._loop.summary().as_state()

    def set_extra_state(self, state: Any) -> None:
        """A resumed run's state comes from the checkpoint's edit state, not from here."""

    def forward(self) -> None:
        raise NotImplementedError("the panel holds viewer elements; it computes nothing")


class EditSummaryPanel(nn.Module):
    """The edit of a finished run, read-only."""

    def __init__(self) -> None:
        super().__init__()
        self._state: Dict[str, Any] = {}
        self.prompt = ViewerText(name="Edit prompt", default_value="", disabled=True)
        self.guidance = ViewerText(name="Guidance (text, image)", default_value="", disabled=True)
        self.edits = ViewerText(name="Edits made", default_value="", disabled=True)
        self.agreement = ViewerText(name="Agreement", default_value="", disabled=True)
        self.ended = ViewerText(name="Ended at step", default_value="", disabled=True)

    def show(self, state: Dict[str, Any], step: Optional[int]) -> None:
        """Fill the fields from a checkpoint's summary (empty for a run that never edited: a nerfacto checkpoint)."""
        self._state = dict(state)
        if not state:
            self.prompt.value = "this checkpoint holds no edit"
            return
        summary = EditSummary.from_state(state)
        self.prompt.value = summary.prompt
        self.guidance.value = f"{summary.guidance_scale:g}, {summary.image_guidance_scale:g}"
        self.edits.value = f"{summary.edits} edits of {summary.num_views} views, {summary.passes_completed} full passes"
        self.agreement.value = summary.agreement
        self.ended.value = "" if step is None else str(step)

    def get_extra_state(self) -> Dict[str, Any]:
        return self._state

    def set_extra_state(self, state: Any) -> None:
        self.show(state or {}, step=None)

    def forward(self) -> None:
        raise NotImplementedError("the panel holds viewer elements; it computes nothing")
