"""Edits that run on a worker thread while the NeRF keeps training, written back one edit interval later.

The contract: an edit requested at step s (render taken on the training thread, with the model as it is at s) is
written into the training images at the start of step s + edit_rate, on the training thread, waiting for it if it has
not finished. The lag is fixed rather than "whenever it finishes", so a run gives the same images for a seed whatever
the speed of the devices. A failed edit is re-raised on the training thread at the first step after it fails.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Dict, List, Literal, Optional, Sequence, Tuple

import torch
from torch import Tensor

from in2n.editors.base import Editor, EditSettings
from in2n.editors.devices import same_device

ConcurrentEdits = Literal["auto", "on", "off"]


def edits_run_concurrently(mode: ConcurrentEdits, editor: Editor, training_device: str) -> bool:
    """auto: only when the editor has a device of its own; on a shared device the two would just take turns."""
    if mode == "auto":
        return editor.device is not None and not same_device(editor.device, torch.device(training_device))
    return mode == "on"


@dataclass(frozen=True)
class EditRequest:
    """One batch of same-sized views to edit, with everything the editor needs, taken on the training thread."""

    step: int
    """The training step the renders were taken at."""
    views: List[int]
    """Dataset indices of the views."""
    renders: Tensor
    """The NeRF's renders of the views, [B, 3, H, W] in [0, 1], on the CPU."""
    originals: Tensor
    """The original views, [B, 3, H, W] in [0, 1], on the CPU."""
    prompt: str
    """The instruction, as it was in the viewer when the edit was requested."""
    settings: EditSettings
    """Guidance and noise settings, as they were when the edit was requested."""
    seeds: List[int]
    """One seed per view."""
    passes: List[int]
    """The pass each view was scheduled in."""
    masks: Optional[Tensor] = None
    """The views' edit regions [B, H, W] in [0, 1] (None: whole views), computed from the renders."""
    noise_levels: Optional[List[int]] = None
    """The timestep each view's edit starts from (None: drawn from its seed; edit states of version 1 and 2 hold
    none)."""

    def run(self, editor: Editor) -> Tensor:
        with torch.no_grad():
            return editor.edit(
                self.renders, self.originals, self.views, self.prompt, self.settings, self.seeds, self.noise_levels
            )

    def state_dict(self) -> Dict[str, Any]:
        """Plain values and tensors only, so that checkpoints load with torch's safe unpickler."""
        return {
            "step": self.step,
            "views": list(self.views),
            "renders": self.renders,
            "prompt": self.prompt,
            "settings": dataclasses.asdict(self.settings),
            "seeds": list(self.seeds),
            "passes": list(self.passes),
            "masks": self.masks,
            "noise_levels": self.noise_levels,
        }

    @classmethod
    def from_state_dict(cls, state: Dict[str, Any], originals: Tensor, current_pass: int) -> EditRequest:
        """The request a checkpoint holds; one without passes (edit state versions 1 and 2) counts as of
        `current_pass`."""
        return cls(
            step=state["step"],
            views=list(state["views"]),
            renders=state["renders"],
            originals=originals,
            prompt=state["prompt"],
            settings=EditSettings(**state["settings"]),
            seeds=list(state["seeds"]),
            passes=list(state.get("passes", [current_pass] * len(state["views"]))),
            masks=state.get("masks"),
            noise_levels=state.get("noise_levels"),
        )


@dataclass
class PendingEdit:
    """An edit handed to the worker, and the step at which its result is written."""

    request: EditRequest
    due_step: int
    result: Future

    def state_dict(self) -> Dict[str, Any]:
        # The request, not the result: a resumed run edits the same renders with the same seeds again, which
        # gives the same images, so saving never has to wait for the worker.
        return {"due_step": self.due_step, "request": self.request.state_dict()}


def edit_stream(device: Optional[torch.device]) -> ContextManager[Any]:
    """A CUDA stream of its own for the edits of a worker on a CUDA device; elsewhere, nothing to do."""
    if device is not None and device.type == "cuda":
        return torch.cuda.stream(torch.cuda.Stream(device))
    return nullcontext()


def raise_if_failed(pending: Sequence[PendingEdit]) -> None:
    """Re-raise the worker's exception (with its traceback) on the calling thread, as soon as it is known."""
    for edit in pending:
        if edit.result.done() and not edit.result.cancelled() and edit.result.exception() is not None:
            edit.result.result()


def finished(result: Tensor) -> Future:
    """A future that already holds its result (an edit computed on the calling thread)."""
    future: Future = Future()
    future.set_result(result)
    return future


class EditWorker:
    """Runs an editor's edits one at a time, in the order submitted, on a daemon thread started on first use.

    The editor is only used from this thread once edits are submitted, so its caches need no lock. torch releases
    the GIL inside its kernels, so the training thread keeps running while an edit computes. On a CUDA device the
    edits run on a CUDA stream of their own, so that their kernels overlap the training step's on the same GPU rather
    than queueing behind them on the default stream; an edit's result is copied to the CPU, which waits for its stream,
    before the training thread sees it.
    """

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self._jobs: queue.SimpleQueue[Optional[Tuple[EditRequest, Future]]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, request: EditRequest) -> Future:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="in2n-edits", daemon=True)
            self._thread.start()
        future: Future = Future()
        self._jobs.put((request, future))
        return future

    def _work(self) -> None:
        with edit_stream(self.editor.device):
            while (job := self._jobs.get()) is not None:
                request, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(request.run(self.editor).cpu())
                except BaseException as error:  # handed to the training thread, which re-raises it
                    future.set_exception(error)

    def close(self) -> None:
        """Stop the thread once the edit it is running is done (cancel the futures of queued edits first)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
