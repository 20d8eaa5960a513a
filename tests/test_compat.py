"""Every private attribute zsexp reads in Ray Tune and Optuna (``zsexp.compat``), on the real objects of the
installed versions: an upgrade that renames or reshapes one fails here, by name, before a resumed sweep
meets it.  The versions these pass on are the ones ``constraints.txt`` pins."""

from __future__ import annotations

import optuna
import pytest
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.search_generator import SearchGenerator

from zsexp.compat import optuna as ot_compat
from zsexp.compat import ray_tune

VERSIONS = f"ray {ray.__version__}, optuna {optuna.__version__}"


def _searcher() -> OptunaSearch:
    s = OptunaSearch({"x": tune.uniform(0.0, 1.0)}, metric="loss", mode="min", seed=0)
    assert isinstance(s.suggest("t1"), dict), VERSIONS
    return s


def test_optuna_search_internals():
    s = _searcher()
    study = ray_tune.optuna_study(s)
    assert isinstance(study, optuna.Study), VERSIONS
    assert isinstance(ray_tune.optuna_study_name(s), str) and ray_tune.optuna_study_name(s) == study.study_name
    trials = ray_tune.optuna_trials(s)
    assert set(trials) == {"t1"} and isinstance(trials["t1"], optuna.Trial), VERSIONS
    assert ray_tune.optuna_mode(s) == "min", VERSIONS
    s.on_trial_complete("t1", {"loss": 0.5})
    assert "t1" in ray_tune.optuna_completed(s), VERSIONS
    frozen = ot_compat.get_trial(study, ot_compat.trial_storage_id(trials["t1"]))
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.value == 0.5, VERSIONS


def test_search_generator_target():
    gen = SearchGenerator(ConcurrencyLimiter(_searcher(), max_concurrent=1))
    gen.set_finished()
    ray_tune.raise_search_target(gen, 7)
    assert ray_tune.search_target(gen) == 7 and not gen.is_finished(), VERSIONS


def test_asha_rungs():
    asha = ASHAScheduler(time_attr="training_iteration", metric="loss", mode="min", max_t=9, grace_period=1,
                         reduction_factor=3)
    brackets = ray_tune.asha_brackets(asha)
    assert isinstance(brackets, list) and brackets, VERSIONS
    rungs = ray_tune.bracket_rungs(brackets[0])
    assert rungs and all(isinstance(m, (int, float)) and isinstance(rec, dict) for m, rec in rungs), VERSIONS
    assert isinstance(ray_tune.asha_trial_brackets(asha), dict), VERSIONS


def test_train_session_dir(ray_cluster):
    assert isinstance(ray_tune.train_session_dir(), str) and ray_tune.train_session_dir(), VERSIONS


def test_optuna_internals():
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    frozen = study.trials[0]
    tid = ot_compat.trial_storage_id(frozen)
    assert isinstance(tid, int), VERSIONS
    ot_compat.set_trial_user_attr(study, tid, "zsexp_lost", True)        # a running trial, as a lost one is
    study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
    got = ot_compat.get_trial(study, tid)
    assert got.user_attrs["zsexp_lost"] is True and got.state == optuna.trial.TrialState.FAIL, VERSIONS
    assert [t.number for t in ot_compat.all_trials(study)] == [0], VERSIONS
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert ot_compat.distribution_contains(dist, 0.5) and not ot_compat.distribution_contains(dist, 2.0)
    cat = optuna.distributions.CategoricalDistribution(["a", "b"])
    assert ot_compat.distribution_contains(cat, "b") and not ot_compat.distribution_contains(cat, "c")


def test_grid_sampler_hook():
    grid = optuna.samplers.GridSampler({"x": [1, 2, 3]}, seed=0)
    assert ot_compat.grid_size(grid) == 3, VERSIONS
    hook = getattr(optuna.samplers.GridSampler, ot_compat.GRID_UNVISITED_HOOK, None)
    assert callable(hook), f"GridSampler.{ot_compat.GRID_UNVISITED_HOOK} is gone ({VERSIONS})"


@pytest.mark.parametrize("module", [ray_tune, ot_compat])
def test_no_private_name_outside_compat(module):
    """The compat modules are the only places zsexp's own code names a library's private attribute."""
    import re
    from pathlib import Path

    names = set(re.findall(r"\._([a-z][a-z_]+)", Path(module.__file__).read_text()))
    root = Path(module.__file__).parents[1]
    for path in root.rglob("*.py"):
        if path.parent.name == "compat":
            continue
        text = path.read_text()
        for name in names:
            hits = re.findall(rf"(?<!self)\.\_{name}\b|self\._{name}\b", text)
            assert not hits, f"{path}: reaches `_{name}` outside zsexp/compat"
