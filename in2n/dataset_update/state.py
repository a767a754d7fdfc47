"""An edit as a checkpoint keeps it: the one record the edit loop writes and the trainer, the viewer and the tools read.

A checkpoint holds it under EDIT_STATE_KEY as plain values and tensors (torch's safe unpickler loads those). Its
format is versioned: 2 added the edits in flight, 3 the progress records, the convergence stop and the regions of
edits in flight. Reading an older version gives a state without what came later; a newer one is refused with a
message, since its fields cannot be known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor

EDIT_STATE_VERSION = 3
"""The version written."""
EDIT_STATE_KEY = "in2n"
"""Where a checkpoint holds the edit state; a checkpoint without it (nerfacto's) holds no edit."""


class EditStateError(ValueError):
    """A checkpoint's edit state this version cannot read."""


@dataclass
class EditState:
    """What a checkpoint keeps of an edit."""

    prompt: str
    """The prompt of the latest edit request."""
    start_step: Optional[int]
    """The step the edit began at; its length (--max-num-iterations) counts from here."""
    image_sizes: List[Tuple[int, int]]
    """(height, width) of every training view, in view order: a resumed run must train on the same sizes."""
    schedule: Dict[str, Any]
    """The order views are edited in and where the edit is in it (`EditSchedule.state_dict`)."""
    edited_images: Dict[int, Tensor] = field(default_factory=dict)
    """The edited training views by view index, uint8 [H, W, 3]."""
    pending: List[Dict[str, Any]] = field(default_factory=list)
    """The edits in flight (`PendingEdit.state_dict`): a resumed run edits them again and writes them at their step."""
    progress: Optional[Dict[str, Any]] = None
    """The progress records and the convergence judged on them (`EditProgress.state_dict`); None: none recorded."""
    stopped_at_length: Optional[int] = None
    """The edit length (--max-num-iterations) under which the edit stopped on convergence; None: it did not."""

    @property
    def num_views(self) -> int:
        return len(self.image_sizes)

    @property
    def edited_views(self) -> List[int]:
        return sorted(self.edited_images)

    def to_dict(self) -> Dict[str, Any]:
        views = self.edited_views
        return {
            "version": EDIT_STATE_VERSION,
            "prompt": self.prompt,
            "edit_start_step": self.start_step,
            "image_sizes": [list(size) for size in self.image_sizes],
            "schedule": self.schedule,
            "edited_views": views,
            "edited_images": [self.edited_images[view] for view in views],
            "pending": self.pending,
            "progress": self.progress,
            "stopped_at_length": self.stopped_at_length,
        }

    @classmethod
    def from_dict(cls, state: Dict[str, Any]) -> EditState:
        version = int(state.get("version", 1))
        if version > EDIT_STATE_VERSION:
            raise EditStateError(
                f"the checkpoint's edit state has version {version}; this in2n reads up to {EDIT_STATE_VERSION}. "
                "Upgrade in2n to continue or read this edit."
            )
        return cls(
            prompt=str(state["prompt"]),
            start_step=state["edit_start_step"],
            image_sizes=[(int(h), int(w)) for h, w in state["image_sizes"]],
            schedule=state["schedule"],
            edited_images=dict(zip(state["edited_views"], state["edited_images"], strict=True)),
            pending=list(state.get("pending", [])),
            progress=state.get("progress"),
            stopped_at_length=state.get("stopped_at_length"),
        )

    @classmethod
    def of_checkpoint(cls, checkpoint: Dict[str, Any]) -> Optional[EditState]:
        """The edit a loaded checkpoint holds, or None for a checkpoint of a run that edited nothing."""
        state = checkpoint.get(EDIT_STATE_KEY)
        return None if state is None else cls.from_dict(state)
