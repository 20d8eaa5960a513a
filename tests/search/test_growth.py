"""Growing a sweep: ``zsexp resume NAME --trials N`` and ``zsexp search MODEL --warm-start SWEEP``, on the
shared real Ray, a real SQLite MLflow store and the sweeps' real Optuna journals.  Kills during an
extension are in ``test_resume.py`` beside the other kill points."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml

from tests.helpers import assert_refused, cli, copy_home, mlflow_runs, tree
from zsexp.cli import main
from zsexp.search.optuna_search import WARM_ATTR, journal_storage
from zsexp.search.space import parse_space
from zsexp.search.status import sweep_trials
from zsexp.search.storage import SWEEP_FILE, read_meta

pytestmark = pytest.mark.slow

FAST = ["--set", "em_iterations=2", "--set", "updates_per_step=5", "--progress-every", "0"]


def _complete(name: str) -> list[optuna.trial.FrozenTrial]:
    meta = read_meta(name, None)
    study = optuna.load_study(study_name=name, storage=journal_storage(meta.dir))
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def _children(name: str) -> list:
    _, parents, children = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    return [r for r in children if r.data.tags["zsexp.sweep"] == name]


def test_resume_trials_grows_a_finished_sweep(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--trials", "2", "--name", "grow", "--max-concurrent", "1", *FAST]) == 0
    first = {r.data.tags["zsexp.trial_id"] for r in _children("grow")}
    capsys.readouterr()
    assert main(["resume", "grow", "--trials", "4"]) == 0
    out = capsys.readouterr().out
    assert "growing the sweep from 2 to 4 trials" in out
    meta = read_meta("grow", None)
    assert meta.trials == 4 and meta.status == "finished" and [g["to"] for g in meta.grown] == [4]
    children = _children("grow")
    ids = {r.data.tags["zsexp.trial_id"] for r in children}
    assert len(children) == 4 and len(ids) == 4 and first < ids           # the earlier runs kept, two new
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {meta.parent_run_id}
    # one study: the sampler of the new trials had the earlier two in view
    complete = _complete("grow")
    assert len(complete) == 4 and {t.user_attrs["tune_trial_id"] for t in complete} == ids
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 4
    _, parents, _ = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    parent = next(p for p in parents if p.info.run_id == meta.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["zsexp.trials"] == "4"
    assert parent.data.params["trials"] == "2"                           # MLflow params are immutable
    assert parent.data.metrics["trials_target"] == 4 and parent.data.metrics["trials_completed"] == 4
    best = max(t.value for t in complete)
    assert parent.data.metrics["best_val_precision_at_50"] == pytest.approx(best)
    # status, selection's reader and the UI's compare link see all four
    space = parse_space(meta.space, meta.space_source, meta.model)
    assert {t.trial_id for t in sweep_trials(meta, space)} == ids
    compare = next(ln for ln in out.splitlines() if "compare-runs" in ln)
    assert all(r.info.run_id in compare for r in children)
    assert main(["status", "grow"]) == 0
    st = capsys.readouterr().out
    assert "4 trials, status finished" in st and "grown from 2 to 4" in st and st.count("TERMINATED") == 4
    # --trials equal to the count is a plain resume: nothing new runs
    assert main(["resume", "grow", "--trials", "4"]) == 0
    assert len(_children("grow")) == 4 and len(_complete("grow")) == 4


def test_growth_refusals_are_one_line_and_change_nothing(template, tmp_path, capfd, monkeypatch):
    home = copy_home(template, tmp_path)
    sweep = home / "sweeps" / "base"
    before = tree(home)
    res = cli(home, "resume", "base", "--trials", "0", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "already has 1 trials")
    assert tree(home) == before
    res = cli(home, "resume", "base", "--trials", "100001", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "at most 100,000")
    # a sweep signed with another user's key: refused before anything is written or started
    other = tmp_path / "other.key"
    other.write_text("f" * 64)
    other.chmod(0o600)
    monkeypatch.setenv("ZSEXP_KEY_FILE", str(other))
    res = cli(home, "resume", "base", "--trials", "3", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "signed with another key")
    monkeypatch.delenv("ZSEXP_KEY_FILE")
    assert tree(home) == before
    assert read_meta("base", None).trials == 1
    # a sweep made before sweeps could grow: pointed to --warm-start
    meta = json.loads((sweep / SWEEP_FILE).read_text())
    (sweep / SWEEP_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "growable"}))
    before = tree(home)
    res = cli(home, "resume", "base", "--trials", "3", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "--warm-start base")
    # a grid sweep beyond its grid
    grid = {**meta, "space": {**meta["space"], "sampler": {"name": "grid"},
                              "params": {"alpha": {"type": "categorical", "choices": [0.5, 1.0]}}}}
    (sweep / SWEEP_FILE).write_text(json.dumps(grid))
    before = tree(home)
    res = cli(home, "resume", "base", "--trials", "3", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "grid of 2 points")
    assert tree(home) == before


def _grid_source(tmp_path: Path) -> Path:
    space = tmp_path / "grid.yaml"
    space.write_text(yaml.safe_dump({
        "model": "zscrgan", "sampler": {"name": "grid"}, "scheduler": "none",
        "fixed": {"em_schedule": "fixed", "updates_per_step": 5, "em_iterations": 2},
        "params": {"alpha": {"type": "categorical", "choices": [0.5, 1.5]}}}))
    return space


def test_warm_start_takes_the_trials_inside_the_new_space(ray_cluster, tmp_path, capsys):
    assert main(["search", "zscrgan", "--space", str(_grid_source(tmp_path)), "--trials", "2", "--name", "src",
                 "--progress-every", "0"]) == 0
    src_values = {t.params["alpha"]: t.value for t in _complete("src")}
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(yaml.safe_dump({
        "model": "zscrgan", "sampler": {"name": "tpe", "n_startup_trials": 1}, "scheduler": "none",
        "fixed": {"em_schedule": "fixed", "updates_per_step": 5, "em_iterations": 2},
        "params": {"alpha": {"type": "uniform", "low": 0.1, "high": 1.0}}}))
    capsys.readouterr()
    assert main(["search", "zscrgan", "--space", str(narrow), "--trials", "2", "--name", "warm",
                 "--warm-start", "src", "--progress-every", "0", "--max-concurrent", "1"]) == 0
    out = capsys.readouterr().out
    assert "1 finished trial(s) given to the sampler" in out and "1 skipped" in out
    assert re.search(r"skipped \w+: alpha=1\.5 is outside", out), out
    complete = _complete("warm")
    warm = [t for t in complete if t.user_attrs.get(WARM_ATTR)]
    own = [t for t in complete if not t.user_attrs.get(WARM_ATTR)]
    assert len(warm) == 1 and warm[0].params == {"alpha": 0.5} and warm[0].value == src_values[0.5]
    assert warm[0].user_attrs[WARM_ATTR] == "src"
    assert len(own) == 2 and len(_children("warm")) == 2                   # --trials counts only its own
    meta = read_meta("warm", None)
    assert meta.warm_start == {"sweep": "src", "taken": 1, "skipped": 1} and meta.status == "finished"
    _, parents, _ = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    parent = next(p for p in parents if p.info.run_id == meta.parent_run_id)
    assert parent.data.tags["zsexp.warm_start"] == "src"
    assert parent.data.metrics["warm_start_trials_taken"] == 1
    assert parent.data.metrics["warm_start_trials_skipped"] == 1
    from zsexp.tracking import client

    report = json.loads(Path(client().download_artifacts(meta.parent_run_id, "warm_start.json")).read_text())
    assert [s["reason"] for s in report["skipped"]] == ["alpha=1.5 is outside this space's alpha"]
    capsys.readouterr()
    assert main(["status", "warm"]) == 0
    assert "warm-started from sweep 'src': 1 trial(s) taken, 1 skipped" in capsys.readouterr().out
    # a warm-started sweep grows like any other; the warm trial still does not count
    assert main(["resume", "warm", "--trials", "3"]) == 0
    assert len(_children("warm")) == 3 and len(_complete("warm")) == 4

    # refusals: one line, exit 2, nothing of the new sweep exists
    home = Path(meta.dir).parents[1]
    before = tree(home)
    wrong_objective = tmp_path / "obj.yaml"
    wrong_objective.write_text(narrow.read_text() + "objective: {metric: map, mode: max}\n")
    budget = tmp_path / "budget.yaml"
    budget.write_text(narrow.read_text() + "fidelity: {max_rounds: 7}\n")
    grid = _grid_source(tmp_path)
    outside = tmp_path / "outside.yaml"
    outside.write_text(narrow.read_text().replace("high: 1.0", "high: 0.2"))
    for args, needle in (
            (["cmgan", "--warm-start", "src"], "tuned zscrgan, not cmgan"),
            (["zscrgan", "--space", str(narrow), "--warm-start", "src", "--data-seed", "1"], "fingerprint"),
            (["zscrgan", "--space", str(wrong_objective), "--warm-start", "src"], "objective"),
            (["zscrgan", "--space", str(budget), "--warm-start", "src"], "budget"),
            (["zscrgan", "--space", str(grid), "--warm-start", "src"], "grid"),
            (["zscrgan", "--space", str(outside), "--warm-start", "src"], "none of its 2 completed trials"),
            (["zscrgan", "--space", str(narrow), "--warm-start", "nosuch"], "no sweep 'nosuch'"),
            (["zscrgan", "--space", str(narrow), "--warm-start", "src", "--name", "src"], "already exists"),
            (["zscrgan", "--space", str(narrow), "--warm-start", "x", "--name", "x"], "cannot warm-start itself"),
            (["zscrgan", "--space", str(narrow), "--warm-start", "../src"], "--warm-start")):
        capsys.readouterr()
        rc = main(["search", *args, "--trials", "1", "--name", "refused"] if "--name" not in args
                  else ["search", *args, "--trials", "1"])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and needle.lower() in lines[0].lower(), (args, err)
        assert tree(home) == before, args


def test_asha_rungs_outlive_the_driver(ray_cluster, tmp_path):
    """The rung values of a sweep's trials are reloaded by a restored scheduler (Tune keeps none)."""
    from zsexp.search.growth import RUNGS_FILE, DurableASHA, set_sweep_dir

    space = tmp_path / "asha.yaml"
    space.write_text(yaml.safe_dump({
        "model": "zscrgan", "scheduler": "asha",
        "fidelity": {"max_rounds": 4, "grace_rounds": 1, "reduction_factor": 2},
        "fixed": {"em_schedule": "fixed", "updates_per_step": 5, "em_iterations": 4},
        "params": {"alpha": {"type": "uniform", "low": 0.1, "high": 2.0}}}))
    assert main(["search", "zscrgan", "--space", str(space), "--trials", "3", "--name", "rungs",
                 "--max-concurrent", "1", "--progress-every", "0"]) == 0
    meta = read_meta("rungs", None)
    lines = [json.loads(ln) for ln in (Path(meta.dir) / RUNGS_FILE).read_text().splitlines()]
    ids = {r.data.tags["zsexp.trial_id"] for r in _children("rungs")}
    assert {e["trial"] for e in lines if e["milestone"] == 1} == ids        # every trial passed rung 1
    values = {(e["trial"], e["milestone"]): e["value"] for e in lines}
    # what a restored scheduler holds (Tuner.restore gives it back empty): every recorded value
    with (Path(meta.dir) / RUNGS_FILE).open("a") as f:
        f.write('{"trial": "cut-by-a-kill", "brack')
    sched = DurableASHA(time_attr="training_iteration", max_t=4, grace_period=1, reduction_factor=2,
                        sweep="rungs", metric="val_precision_at_50", mode="max")
    set_sweep_dir("rungs", meta.dir)
    sched.set_search_properties(None, None)
    held = {(tid, m): v for m, rec in sched._brackets[0]._rungs for tid, v in rec.items()}
    assert held == values
    # and a grown sweep's new trials meet the earlier ones in the rungs
    assert main(["resume", "rungs", "--trials", "5"]) == 0
    lines = (Path(meta.dir) / RUNGS_FILE).read_text().splitlines()
    assert lines.count('{"trial": "cut-by-a-kill", "brack') == 1             # closed, not glued to a record
    lines = [json.loads(ln) for ln in lines if not ln.startswith('{"trial": "cut')]
    assert len({e["trial"] for e in lines if e["milestone"] == 1}) == 5
