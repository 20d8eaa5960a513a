"""The sweep callback's parts, one by one, on a real SQLite MLflow store (no Ray cluster needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from zsexp.search.callback import MlflowSweepCallback, run_name
from zsexp.search.record import read_marker, read_progress
from zsexp.tracking import Progress, client, ensure_experiment


class _Manager:
    best_checkpoint_result = None
    latest_checkpoint_result = None


def _trial(tid: str, config: dict, last: dict | None = None):
    return SimpleNamespace(trial_id=tid, config=config, last_result=last or {},
                           run_metadata=SimpleNamespace(checkpoint_manager=_Manager()))


@pytest.fixture()
def cb(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    c = client(uri)
    exp = ensure_experiment(c, "e", uri)
    parent = c.create_run(exp, run_name="s").info.run_id
    (tmp_path / "s").mkdir()
    cb = MlflowSweepCallback(tracking_uri=uri, experiment_id=exp, parent_run_id=parent, sweep="s",
                             metric_key="val_top1", mode="max", max_rounds=2, params_of=lambda cfg: {
                                 k: str(v) for k, v in cfg.items()}, flat_of=dict,
                             progress=Progress("s", "top1", "max", out=lambda *_: None), common_tags={},
                             state_file=str(tmp_path / "s" / "zsexp_progress.json"))
    return cb, c


def test_run_name_is_short_and_names_the_trial():
    name = run_name("abc123", {"alpha": 0.123456, "batch_size": 64, "lr_csem": 0.002})
    assert name == "abc123 alpha=0.123 batchsize=64 lrcsem=0.002"
    assert len(run_name("t", {f"k{i}": 1.0 for i in range(40)})) == 72


def test_rounds_already_logged_are_not_logged_again(cb):
    cb, c = cb
    t = _trial("t1", {"alpha": 0.5})
    cb.on_trial_start(0, [], t)
    for step, v in ((1, 10.0), (2, 20.0), (1, 10.0), (2, 20.0)):      # a resumed trial re-runs rounds 1-2
        cb.on_trial_result(0, [], t, {"training_iteration": step, "val_top1": v})
    hist = c.get_metric_history(cb.runs["t1"], "val_top1")
    assert [m.step for m in hist] == [1, 2]
    assert cb.best_ckpt["t1"] == {"value": 20.0, "round": 2}


def test_finish_is_durable_before_mlflow_and_never_repeated(cb, tmp_path):
    cb, c = cb
    t = _trial("t1", {"alpha": 0.5}, last={"training_iteration": 2, "max_rounds": 2})
    cb.on_trial_start(0, [], t)
    cb.on_trial_result(0, [], t, {"training_iteration": 2, "val_top1": 7.0})
    cb.on_trial_complete(0, [], t)
    run = c.get_run(cb.runs["t1"])
    assert run.info.status == "FINISHED" and run.data.tags["zsexp.outcome"] == "completed"
    assert read_marker(tmp_path / "s", "t1")["outcome"] == "completed"
    saved = read_progress(tmp_path / "s")
    assert saved["outcomes"] == {"t1": "completed"} and saved["logged_step"] == {"t1": 2}
    # Tune restarts the finished trial after a kill: the run is not reopened, nothing is logged twice
    cb.on_trial_restore(0, [], t)
    cb.on_trial_complete(0, [], t)
    assert c.get_run(cb.runs["t1"]).info.status == "FINISHED"
    assert len(c.get_metric_history(cb.runs["t1"], "best_val_top1")) == 1


def test_set_state_prefers_the_durable_mirror(cb, tmp_path):
    cb, _ = cb
    mirror = {"runs": {"a": "r1", "b": "r2"}, "outcomes": {"a": "completed"}, "logged_step": {"b": 3},
              "best_ckpt": {}, "pending": {}, "peak": 2, "best": None}
    (tmp_path / "s" / "zsexp_progress.json").write_text(json.dumps(mirror))
    cb.set_state({"runs": {"a": "r1"}, "outcomes": {}, "peak": 1})    # Tune's older snapshot
    assert cb.runs == {"a": "r1", "b": "r2"} and cb.outcomes == {"a": "completed"} and cb.logged_step == {"b": 3}


def test_sweep_callback_pickles_while_tune_swaps_print(monkeypatch):
    """Tune pickles the stopper (and through it this callback) into its experiment state while
    builtins.print is replaced; a stored reference to the original print made that save crash."""
    import builtins
    import functools

    import ray.cloudpickle as cloudpickle

    from zsexp.search.callback import MlflowSweepCallback
    from zsexp.search.stopper import FailureBudget
    from zsexp.tracking import Progress

    cb = MlflowSweepCallback(tracking_uri="sqlite:///x.db", experiment_id="1", parent_run_id="p", sweep="s",
                             metric_key="val_top1", mode="max", max_rounds=3, params_of=functools.partial(dict),
                             flat_of=dict, progress=Progress("s", "top1", "max"), common_tags={})
    monkeypatch.setattr(builtins, "print", lambda *a, **k: None)
    restored = cloudpickle.loads(cloudpickle.dumps(FailureBudget(cb, 2)))
    assert restored.budget == 2 and restored.callback.sweep == "s"

