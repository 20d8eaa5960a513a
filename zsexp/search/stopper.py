"""A Tune Stopper for the sweep's failure budget."""

from __future__ import annotations

from typing import Any

from ray.tune import Stopper


class FailureBudget(Stopper):
    """Stop the whole sweep once more than ``budget`` trials failed (``None``: never)."""

    def __init__(self, callback: Any, budget: int | None):
        self.callback, self.budget = callback, budget

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.budget is not None and self.callback.n_failed > self.budget
