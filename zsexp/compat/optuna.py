"""Optuna's private attributes that zsexp reads (tested on the pinned version: tests/test_compat.py).

* A ``FrozenTrial``'s storage id is ``_trial_id`` (its ``number`` is per study, the id per storage): the
  id Ray's OptunaSearch keeps for a Tune trial, and the key of the storage calls below.
* A ``Study``'s storage and its id in that storage are ``_storage`` and ``_study_id``: zsexp marks a trial
  lost to a kill with a user attribute (``Study`` has no public setter for a finished trial) and reads
  every trial without copying them.
* A ``BaseDistribution`` tests membership with ``_contains`` on its internal representation.
* ``GridSampler`` keeps its grid in ``_all_grids`` and picks the next point with
  ``_get_unvisited_grid_ids(study)``, which zsexp's grid sampler overrides (``zsexp.search.optuna_search``).
"""

from __future__ import annotations

from typing import Any

GRID_UNVISITED_HOOK = "_get_unvisited_grid_ids"      # the GridSampler method TuneGridSampler overrides


def trial_storage_id(frozen: Any) -> int:
    return frozen._trial_id


def set_trial_user_attr(study: Any, trial_id: int, key: str, value: Any) -> None:
    """A user attribute on any trial of ``study`` (by storage id), finished or not."""
    study._storage.set_trial_user_attr(trial_id, key, value)


def get_trial(study: Any, trial_id: int) -> Any:
    """The frozen trial of storage id ``trial_id``, read afresh from the study's storage."""
    return study._storage.get_trial(trial_id)


def all_trials(study: Any) -> list[Any]:
    """Every trial of ``study``, not copied (read-only)."""
    return study._storage.get_all_trials(study._study_id, deepcopy=False)


def distribution_contains(dist: Any, value: Any) -> bool:
    """Whether ``value`` (external representation) lies in ``dist``; a categorical value that is not one of
    the choices has no internal representation (Optuna raises ValueError) and lies outside."""
    try:
        internal = dist.to_internal_repr(value)
    except ValueError:
        return False
    return dist._contains(internal)


def grid_size(sampler: Any) -> int:
    return len(sampler._all_grids)
