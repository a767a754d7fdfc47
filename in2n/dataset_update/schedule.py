"""Which views to edit next: every view once per pass, in an order shuffled once per pass."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

import torch


class ScheduledView(NamedTuple):
    """A view to edit."""

    view: int
    pass_index: int
    """The pass it belongs to."""
    place: Optional[int]
    """Its place in the pass's shuffled order (None for a retried view)."""


class EditSchedule:
    """The Iterative Dataset Update's order of views, with its progress, resumable from a checkpoint.

    Views whose edit failed (for example a NaN from the diffusion model) are queued and served first
    on the next call, so no view is silently skipped for a whole pass.

    Args:
        num_views: number of training views.
        seed: seeds the per-pass shuffles, so a run and its resume see the same order.
    """

    def __init__(self, num_views: int, seed: int = 0) -> None:
        if num_views < 1:
            raise ValueError("an edit schedule needs at least one view")
        self.num_views = num_views
        self.seed = seed
        self.passes_completed = 0
        self.position = 0
        self.views_edited = 0
        self.retry: List[int] = []
        self.order = self._shuffled(self.passes_completed)

    def _shuffled(self, pass_index: int) -> List[int]:
        # Any integer is a valid --pipeline.seed; torch takes 64 bits (negative values wrap the same way).
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + pass_index) % (1 << 64))
        return torch.randperm(self.num_views, generator=generator).tolist()

    def next_views(self, count: int) -> List[int]:
        """The next `count` distinct views to edit (fewer only if the scene has fewer views)."""
        return [scheduled.view for scheduled in self.next_scheduled(count)]

    def next_scheduled(self, count: int) -> List[ScheduledView]:
        """The next `count` distinct views to edit, with their pass and their place in it."""
        views: List[ScheduledView] = []
        while self.retry and len(views) < count:
            view = self.retry.pop(0)
            if view not in (s.view for s in views):
                # A retried view takes a place of the pass at random: its own went to the failed edit.
                views.append(ScheduledView(view, self.passes_completed, None))
        while len(views) < min(count, self.num_views):
            if self.position == self.num_views:
                self.passes_completed += 1
                self.position = 0
                self.order = self._shuffled(self.passes_completed)
            view = self.order[self.position]
            if view in (s.view for s in views):
                # A view already in this batch (a retry, or the end of the last pass) waits for the next call,
                # so that every pass still edits every view exactly once.
                break
            views.append(ScheduledView(view, self.passes_completed, self.position))
            self.position += 1
        return views

    def mark_edited(self, count: int) -> None:
        """Record that `count` views received a new image."""
        self.views_edited += count

    def mark_failed(self, view: int) -> None:
        """Queue a view whose edit was rejected, to be tried again first."""
        if view not in self.retry:
            self.retry.append(view)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "num_views": self.num_views,
            "seed": self.seed,
            "passes_completed": self.passes_completed,
            "position": self.position,
            "views_edited": self.views_edited,
            "retry": list(self.retry),
            "order": list(self.order),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["num_views"] != self.num_views:
            raise ValueError(f"schedule was saved for {state['num_views']} views, this scene has {self.num_views}")
        self.seed = state["seed"]
        self.passes_completed = state["passes_completed"]
        self.position = state["position"]
        self.views_edited = state["views_edited"]
        self.retry = list(state["retry"])
        self.order = list(state["order"])
