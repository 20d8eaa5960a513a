"""The Optuna searcher under Tune: grid points given to replacements, the best round's value reported."""

from __future__ import annotations

import optuna
import pytest

from zsexp.search.optuna_search import journal_storage
from zsexp.search.space import load_space


def _space():
    return load_space(None, "zscrgan")


def test_grid_sampler_gives_a_lost_trials_point_to_its_replacement(tmp_path):
    """A grid sweep killed just after a trial was created: the replacement takes the lost point."""
    from zsexp.search.optuna_search import TuneGridSampler, reconcile_study

    grid = {"alpha": [0.1, 1.0], "beta": [0.5, 2.0]}
    dists = {k: optuna.distributions.CategoricalDistribution(v) for k, v in grid.items()}
    study = optuna.create_study(storage=journal_storage(tmp_path), study_name="g",
                                sampler=TuneGridSampler(grid, seed=3))
    trials = [study.ask(dists) for _ in range(4)]
    for t in (trials[0], trials[2], trials[3]):
        study.tell(t, 1.0)
    lost, _ = reconcile_study(study, known={t._trial_id for t in (trials[0], trials[2], trials[3])})
    assert len(lost) == 1                                   # trials[1] never ran: failed and marked lost
    again = study.ask(dists)
    assert again.params == trials[1].params
    visited = {tuple(t.params.values()) for t in (trials[0], trials[2], trials[3], again)}
    assert len(visited) == 4


def test_optuna_is_told_the_best_round_value(tmp_path):
    """The study (read back from its durable journal) holds the trial's best round, not its last."""
    from zsexp.search.optuna_search import ResumableOptunaSearch

    space = _space()
    s = ResumableOptunaSearch(space=space.distributions(), metric="val_precision_at_50", mode="max",
                              sampler=space.make_sampler(0), storage=journal_storage(tmp_path), study_name="s")
    assert s.suggest("t1") is not None
    for step, v in enumerate([10.0, 42.0, 30.0], start=1):
        s.on_trial_result("t1", {"val_precision_at_50": v, "training_iteration": step})
    s.on_trial_complete("t1", {"val_precision_at_50": 30.0, "training_iteration": 3})
    study = optuna.load_study(study_name="s", storage=journal_storage(tmp_path))
    assert study.trials[0].value == pytest.approx(42.0)

