"""Issue 10: a sweep killed at any moment resumes to exactly N trials, one MLflow child run each.

The driver runs in a subprocess (its own process group, its own Ray) and kills itself at a named
moment (``zsexp.faults``), as a dying machine would; ``zsexp resume`` then runs in this process on
the shared test Ray.  Every check reads the real durable stores: the MLflow SQLite file, the
Optuna journal, Tune's experiment directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from zsexp.cli import main
from zsexp.errors import ZsexpError
from zsexp.search.optuna_search import journal_storage
from zsexp.search.storage import SWEEP_FILE
from zsexp.tracking import client

pytestmark = pytest.mark.slow

N = 3
SEARCH = ["search", "zscrgan", "--trials", str(N), "--max-concurrent", "1", "--scheduler", "none",
          "--set", "em_iterations=4", "--progress-every", "0"]


def _driver(args: list[str], tmp_path: Path, env_extra: dict[str, str], name: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    with open(tmp_path / f"{name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        rc = proc.wait(timeout=400)
    return subprocess.CompletedProcess(args, rc, (tmp_path / f"{name}.log").read_text(), "")


def _check_exactly_n(name: str, n: int = N) -> dict:
    home = Path(os.environ["ZSEXP_HOME"])
    sweep = home / "sweeps" / name
    meta = json.loads((sweep / SWEEP_FILE).read_text())
    assert meta["status"] == "finished"
    c = client()
    runs = c.search_runs([meta["experiment_id"]], filter_string=f"tags.`zsexp.sweep` = '{name}' and "
                                                                f"tags.`zsexp.kind` = 'trial'", max_results=1000)
    ids = [r.data.tags["zsexp.trial_id"] for r in runs]
    assert len(runs) == n and len(set(ids)) == n, ids                        # one child run per trial
    assert all(r.info.status == "FINISHED" and r.data.tags.get("zsexp.outcome") == "completed" for r in runs)
    configs = {json.dumps({k: v for k, v in r.data.params.items()}, sort_keys=True) for r in runs}
    assert len(configs) == n                                                 # no configuration trained twice
    for r in runs:                                                           # history without gaps or repeats
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_precision_at_50")]
        assert sorted(steps) == list(range(1, 5)), (r.data.tags["zsexp.trial_id"], steps)
    study = optuna.load_study(study_name=name, storage=journal_storage(sweep))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == n                                                # the sampler saw every result
    assert {t.user_attrs["tune_trial_id"] for t in complete} == set(ids)
    parent = c.get_run(meta["parent_run_id"])
    assert parent.info.status == "FINISHED"
    return {"runs": runs, "study": study, "sweep": sweep}


@pytest.mark.parametrize("point", ["startup", "trial_complete:2", "trial_logged:2", "checkpoint_upload:1",
                                   "summary"])
def test_kill_at_each_moment_then_resume(ray_cluster, tmp_path, point):
    name = "k-" + point.split(":")[0].replace("_", "-")
    r = _driver([*SEARCH, "--name", name], tmp_path, {"ZSEXP_FAULT_KILL": point}, "search")
    assert r.returncode == -signal.SIGKILL, r.stdout[-3000:]
    assert "[fault] killing the driver" in r.stdout
    assert main(["resume", name]) == 0
    _check_exactly_n(name)
    assert main(["resume", name]) == 0                     # a finished sweep resumes to the same state
    _check_exactly_n(name)


def test_killed_twice_in_a_row(ray_cluster, tmp_path):
    """The double kill that made every later resume crash with UpdateFinishedTrialError."""
    name = "k-double"
    r = _driver([*SEARCH, "--name", name], tmp_path, {"ZSEXP_FAULT_KILL": "trial_complete:1"}, "search")
    assert r.returncode == -signal.SIGKILL
    r = _driver(["resume", name], tmp_path, {"ZSEXP_FAULT_KILL": "trial_logged:1"}, "resume1")
    assert r.returncode == -signal.SIGKILL, r.stdout[-3000:]
    assert main(["resume", name]) == 0
    _check_exactly_n(name)


def test_worker_death_is_retried_from_its_checkpoint(ray_cluster, tmp_path):
    name = "k-worker"          # a subprocess: its own Ray's workers inherit the fault variable
    r = _driver([*SEARCH, "--name", name], tmp_path, {"ZSEXP_FAULT_KILL_WORKER": "3"}, "search")
    assert r.returncode == 0, r.stdout[-3000:]
    checked = _check_exactly_n(name)
    assert (checked["sweep"] / "fault_worker_killed").is_file()               # a worker did die


def test_ctrl_c_stops_cleanly_and_resume_goes_on(ray_cluster, tmp_path):
    name = "k-sigint"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "sigint.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", *SEARCH, "--name", name,
                             "--set", "em_iterations=12"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    progress = Path(os.environ["ZSEXP_HOME"]) / "sweeps" / name / "zsexp_progress.json"
    t0 = time.time()
    while time.time() - t0 < 200:
        if progress.is_file() and json.loads(progress.read_text()).get("outcomes"):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)                         # Ctrl-C once
    rc = proc.wait(timeout=200)
    log.close()
    out = (tmp_path / "sigint.log").read_text()
    assert rc == 130, out[-3000:]                           # stopped, not finished: a script can tell
    assert f"zsexp resume {name}" in out
    assert main(["resume", name]) == 0
    runs = _check_exactly_n_rounds(name, rounds=12)
    assert len(runs) == N


def _check_exactly_n_rounds(name: str, rounds: int) -> list:
    meta = json.loads((Path(os.environ["ZSEXP_HOME"]) / "sweeps" / name / SWEEP_FILE).read_text())
    c = client()
    runs = c.search_runs([meta["experiment_id"]], filter_string=f"tags.`zsexp.sweep` = '{name}' and "
                                                                f"tags.`zsexp.kind` = 'trial'", max_results=1000)
    assert len({r.data.tags["zsexp.trial_id"] for r in runs}) == len(runs)
    for r in runs:
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val_precision_at_50")]
        assert sorted(steps) == list(range(1, rounds + 1))
    return runs


def test_refused_commands_leave_nothing(ray_cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)     # restored after: a refused URI must not stick
    home = Path(os.environ["ZSEXP_HOME"])
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("model: zscrgan\nparams: {lam: {type: uniform, low: 0, high: 5}}\n")
    refused = [
        ["search", "zscrgan", "--gpus", "16", "--name", "r1"],                      # budget
        ["search", "zscrgan", "--space", str(bad_space), "--name", "r2"],           # space
        ["search", "zscrgan", "--dataset", str(tmp_path / "missing.npz"), "--name", "r3"],   # data
        ["search", "zscrgan", "--tracking-uri", "http://127.0.0.1:9", "--name", "r4"],   # tracking store
        ["search", "zscrgan", "--trials", "0", "--name", "r5"],
    ]
    for args in refused:
        assert main(args) == 2, args
    err = capsys.readouterr().err
    assert "GPU" in err and "lam" in err and "missing.npz" in err and "127.0.0.1:9" in err
    sweeps = home / "sweeps"
    assert not sweeps.exists() or not any(sweeps.iterdir())
    db = home / "mlflow.db"
    if db.exists():
        c = client(f"sqlite:///{db}")
        assert not c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=10)
        assert not c.search_registered_models()
    assert main(["status", "r1"]) == 2


def test_a_snapshot_cut_by_the_kill_is_repaired(tmp_path, monkeypatch):
    """Tune copies its snapshot to storage in the background every step; a kill mid-copy truncates a
    file.  It is taken again from the driver's staging copy when that copy carries the recorded digest,
    or the session is set aside -- and the cut file is never unpickled to find out."""
    import ray.cloudpickle as cloudpickle

    from zsexp.search import integrity
    from zsexp.search.recovery import recover_snapshot

    d = tmp_path / "sweeps" / "s"
    d.mkdir(parents=True)
    for session in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (d / f"experiment_state-{session}.json").write_text(json.dumps({"trial_data": []}))
        for name in ("search_gen_state-{}.json", "searcher-state-{}.pkl", "callback-states-{}.pkl"):
            (d / name.format(session)).write_bytes(cloudpickle.dumps({"session": session}))
    integrity.record(d, {p.name: p for p in d.iterdir()})      # what the driver signs as it writes them
    newest = d / "callback-states-2026-01-02_00-00-00.pkl"
    good = newest.read_bytes()
    newest.write_bytes(good[: len(good) // 2])                # the copy the kill cut short
    staging = tmp_path / "raytmp" / "ray" / "session_x" / "artifacts" / "t" / "s" / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / newest.name).write_bytes(good)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    notes = recover_snapshot(d, "s")
    assert newest.read_bytes() == good and "staging" in notes[0]
    newest.write_bytes(b"")                                   # no staging copy left: set the session aside
    (staging / newest.name).unlink()
    notes = recover_snapshot(d, "s")
    assert not (d / "experiment_state-2026-01-02_00-00-00.json").exists()
    assert (d / "experiment_state-2026-01-01_00-00-00.json").exists() and len(notes) == 4
    assert integrity.check(d) == []                           # what is left verifies


def test_signatures_cover_what_storage_holds_while_tune_copies_late(tmp_path):
    """Tune's background copy to storage can lag the staging files by several steps: the version storage
    holds stays verifiable however many newer versions the driver records, and so does a version
    copied a few steps late."""
    from zsexp.search import integrity

    d, staging = tmp_path / "sweep", tmp_path / "staging"
    d.mkdir()
    staging.mkdir()
    name = "callback-states-s.pkl"
    (staging / name).write_bytes(b"v0")
    integrity.record(d, {name: staging / name})
    (d / name).write_bytes(b"v0")                      # the copy of version 0 reached storage
    for i in range(1, 3 * integrity.KEEP_DIGESTS):     # many steps while no further copy lands
        (staging / name).write_bytes(f"v{i}".encode())
        integrity.record(d, {name: staging / name})
    assert integrity.check(d) == []                    # storage's version 0 is still signed
    (d / name).write_bytes(f"v{3 * integrity.KEEP_DIGESTS - 5}".encode())   # a copy from 4 steps ago lands
    assert integrity.check(d) == []
    (d / name).write_bytes(b"v")                       # cut short: recognised, never unpickled
    assert integrity.check(d) == [d / name]
    import pickle

    (d / name).write_bytes(pickle.dumps({"planted": True}))
    with pytest.raises(ZsexpError, match="not written by this sweep's driver"):
        integrity.check(d)
