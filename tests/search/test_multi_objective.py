"""Multi-objective sweeps end to end on the shared test Ray: quality against what a trial costs, the Pareto
front where users look (status, MLflow tags, the parent's artifacts), selection from the front, growth,
warm start, and the refusals of what cannot rank several objectives."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers import cli, mlflow_runs, refused_unchanged
from zsexp.cli import main
from zsexp.search.optuna_search import journal_storage
from zsexp.search.storage import read_meta

pytestmark = pytest.mark.slow

SPACE = {"model": "zscrgan", "sampler": {"name": "random"},
         "objective": [{"metric": "precision@50", "mode": "max"}, {"metric": "compute_wall_s", "mode": "min"}],
         "fixed": {"em_iterations": 2, "em_schedule": "fixed"},
         "params": {"alpha": {"type": "uniform", "low": 0.1, "high": 2.0},
                    "updates_per_step": {"type": "categorical", "choices": [5, 40]}}}


def _space(tmp_path: Path, name: str = "mo.yaml", **patch) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**SPACE, **patch}))
    return str(path)


def _front_of(study: optuna.Study) -> set[str]:
    return {t.user_attrs["tune_trial_id"] for t in study.best_trials}


def test_multi_objective_sweep_front_select_grow_and_warm_start(ray_cluster, tmp_path, capsys):
    space = _space(tmp_path)
    assert main(["search", "zscrgan", "--space", space, "--trials", "5", "--name", "mo", "--progress-every", "0",
                 "--max-concurrent", "2"]) == 0
    out = capsys.readouterr().out
    assert "Pareto front on validation" in out and "scheduler none" in out
    meta = read_meta("mo", None)
    study = optuna.load_study(study_name="mo", storage=journal_storage(meta.dir))
    assert study.metric_names == ["val_precision_at_50", "compute_wall_s"]          # named, not "Objective 0"
    assert all(len(t.values) == 2 for t in study.trials)
    assert all("mlflow_run_id" in t.user_attrs and t.user_attrs["outcome"] == "completed" and
               t.user_attrs["compute_wall_s"] > 0 for t in study.trials)
    front = _front_of(study)
    # the MLflow child runs carry the study's own front; the parent its JSON and plot
    c, parents, children = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    kids = [r for r in children if r.data.tags["zsexp.sweep"] == "mo"]
    tagged = {r.data.tags["zsexp.trial_id"] for r in kids if r.data.tags.get("zsexp.pareto") == "true"}
    assert tagged == front and all(r.data.tags.get("zsexp.pareto") in ("true", "false") for r in kids)
    for t in study.trials:            # each trial's MLflow run is the one the study names
        run = next(r for r in kids if r.data.tags["zsexp.trial_id"] == t.user_attrs["tune_trial_id"])
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
    parent = next(p for p in parents if p.data.tags["zsexp.sweep"] == "mo")
    arts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.json", "pareto_front.png"} <= arts
    doc = json.loads(Path(c.download_artifacts(parent.info.run_id, "pareto_front.json")).read_text())
    assert {p["trial"] for p in doc["front"]} == front and doc["objectives"] == study.metric_names
    # status lists the front with every objective (and --json carries it)
    assert main(["status", "mo", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert {p["trial"] for p in st["front"]["trials"]} == front and st["compute"]["compute_wall_s"] > 0
    # grow: the same study goes on with both objectives
    assert main(["resume", "mo", "--trials", "6"]) == 0
    study = optuna.load_study(study_name="mo", storage=journal_storage(meta.dir))
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 6
    # selection from the front, decided on the named quality objective
    capsys.readouterr()
    assert main(["select", "mo", "--k", "2", "--seeds", "1", "--objective", "precision@50"]) == 0
    folder = Path(meta.dir) / "selection-k2-s1-val_precision_at_50"
    assert (folder / "selection.json").is_file()
    taken = {cand["trial_id"] for cand in json.loads((folder / "candidates.json").read_text())}
    assert taken <= _front_of(study) and len(taken) == min(2, len(_front_of(study)))
    # warm start: the earlier study's trials given with both values
    assert main(["search", "zscrgan", "--space", space, "--trials", "1", "--name", "mo-warm", "--warm-start", "mo",
                 "--progress-every", "0"]) == 0
    warm = optuna.load_study(study_name="mo-warm", storage=journal_storage(read_meta("mo-warm", None).dir))
    assert len(warm.trials) == 7 and all(len(t.values) == 2 for t in warm.trials)


def test_what_cannot_rank_several_objectives_is_refused(tmp_path, home, capfd, monkeypatch):
    space = _space(tmp_path)
    cases = [(["search", "zscrgan", "--space", space, "--scheduler", "asha"], "non-dominated sorting"),
             (["search", "zscrgan", "--space", space, "--sampler", "cmaes"], "optimises one objective"),
             (["search", "zscrgan", "--space", _space(tmp_path, "asha.yaml", scheduler="asha")], "scheduler"),
             (["select", "nosuch", "--objective", "x"], "no sweep")]
    for argv, needle in cases:
        refused_unchanged(home, argv, needle, capfd=capfd, monkeypatch=monkeypatch)
    res = cli(home, "ui", "--dashboard", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 2 and "give SWEEP" in res.stderr
