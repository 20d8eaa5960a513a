"""Ray Tune's private attributes that zsexp reads or sets (tested on the pinned version: tests/test_compat.py).

* :class:`~ray.tune.search.search_generator.SearchGenerator` keeps its trial target in ``_total_samples``
  and whether it is done in ``_finished``: a grown sweep raises the target after Tune restored it.
* :class:`~ray.tune.schedulers.AsyncHyperBandScheduler` keeps its brackets in ``_brackets`` and each
  trial's bracket in ``_trial_info``; a bracket keeps its rungs in ``_rungs`` (a list of (milestone,
  {trial id: value})): zsexp records and reloads them so that rungs outlive the driver.
* :class:`~ray.tune.search.optuna.OptunaSearch` keeps the Optuna study in ``_ot_study``, its name in
  ``_study_name``, the Optuna trial of each Tune trial in ``_ot_trials``, the trials it was told the end of
  in ``_completed_trials`` and its mode in ``_mode``.
* ``ray.train.constants._get_ray_train_session_dir``: where this driver's Tune stages its snapshot.
"""

from __future__ import annotations

from typing import Any


def search_target(generator: Any) -> int:
    return generator._total_samples


def raise_search_target(generator: Any, target: int) -> None:
    """A restored search generator creates trials again, up to ``target``."""
    generator._total_samples = target
    generator._finished = False


def asha_brackets(scheduler: Any) -> list[Any]:
    return scheduler._brackets


def asha_trial_brackets(scheduler: Any) -> dict[str, Any]:
    """Trial id -> its bracket, for the trials ASHA is following (a mapping zsexp may add to)."""
    return scheduler._trial_info


def bracket_rungs(bracket: Any) -> list[tuple[float, dict[str, float]]]:
    return bracket._rungs


def optuna_study(searcher: Any) -> Any:
    return searcher._ot_study


def optuna_study_name(searcher: Any) -> str:
    return searcher._study_name


def optuna_trials(searcher: Any) -> dict[str, Any]:
    """Tune trial id -> the Optuna trial Ray's OptunaSearch asked for it."""
    return searcher._ot_trials


def optuna_completed(searcher: Any) -> set[str]:
    """The Tune trials whose end Ray's OptunaSearch has processed."""
    return searcher._completed_trials


def optuna_mode(searcher: Any) -> str:
    return searcher._mode


def train_session_dir() -> str:
    """This Ray session's folder of Ray Train / Tune driver artifacts."""
    from ray.train.constants import _get_ray_train_session_dir

    return _get_ray_train_session_dir()
