"""A sweep stopped at any moment (SIGKILL at a named point, a dead worker, Ctrl-C, SIGTERM) resumes to
exactly N trials, one MLflow child run each.

The driver runs in a subprocess (its own process group, its own Ray) and kills itself at a named
moment (``zsexp.faults``), as a dying machine would; ``zsexp resume`` then runs in this process on
the shared test Ray.  Every check reads the real durable stores: the MLflow SQLite file, the
Optuna journal, Tune's experiment directory."""

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

from tests.helpers import CLI, cli, cli_env, mlflow_runs, wait_for
from zsexp.cli import main
from zsexp.search.optuna_search import journal_storage
from zsexp.search.record import read_progress
from zsexp.search.storage import SWEEP_FILE
from zsexp.tracking import client

pytestmark = pytest.mark.slow


N = 3
SEARCH = ["search", "zscrgan", "--trials", str(N), "--max-concurrent", "1", "--scheduler", "none",
          "--set", "em_iterations=4", "--set", "updates_per_step=10", "--progress-every", "0"]


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
    # the retried trial's error.pkl of its failed attempt was signed by the driver: the sweep reads back
    st = _driver(["status", name], tmp_path, {}, "status")
    assert st.returncode == 0 and "not written by this sweep's driver" not in st.stdout, st.stdout[-2000:]


def test_ctrl_c_stops_cleanly_and_resume_goes_on(ray_cluster, tmp_path):
    name = "k-sigint"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "sigint.log", "w")
    longer = [a.replace("em_iterations=4", "em_iterations=12").replace("updates_per_step=10", "updates_per_step=20")
              for a in SEARCH]
    proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", *longer, "--name", name],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sweep = Path(os.environ["ZSEXP_HOME"]) / "sweeps" / name
    t0 = time.time()
    while time.time() - t0 < 200:
        if read_progress(sweep).get("outcomes"):
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


def test_sigterm_stops_a_sweep_resumably(home, ray_cluster, capfd, monkeypatch):
    """SIGTERM (a cluster scheduler's stop) ends `search` like Ctrl-C: exit 130, the sweep `interrupted`,
    and `zsexp resume` completes it to exactly the asked number of trials."""
    args = [*CLI, "search", "ridge", "--trials", "3", "--name", "term", "--max-concurrent", "1",
            "--progress-every", "0"]
    proc = subprocess.Popen(args, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=home.parent)
    seen = []
    for line in proc.stdout:                 # wait for the first finished trial, then stop it
        seen.append(line)
        if "done 1" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, (seen[-5:], out[-1500:], err[-1500:])
    assert "Traceback" not in err
    st = cli(home, "status", "term", "--json", capfd=capfd, monkeypatch=monkeypatch)
    assert json.loads(st.stdout)["meta"]["status"] == "interrupted"
    res = cli(home, "resume", "term", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr[-2000:]
    trials = json.loads(cli(home, "status", "term", "--json", capfd=capfd, monkeypatch=monkeypatch).stdout)["trials"]
    assert len(trials) == 3 and all(t["status"] == "TERMINATED" for t in trials)


def test_kill_and_resume(ray_cluster, tmp_path):
    home = Path(os.environ["ZSEXP_HOME"])
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--trials", "3", "--name", "kill",
           "--max-concurrent", "1", "--scheduler", "none", "--set", "em_iterations=14", "--set", "em_schedule=fixed",
           "--set", "updates_per_step=20", "--progress-every", "0"]
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sweep = home / "sweeps" / "kill"

    def state():
        return read_progress(sweep)

    seen: dict[str, str] = {}

    def one_done_one_midway():
        s = state()
        if len(s.get("outcomes", {})) < 1:
            return False
        running = [t for t in s.get("runs", {}) if t not in s.get("outcomes", {})]
        if running and any(running[0] in str(p) and int(p.name[-6:]) >= 2 for p in sweep.glob("*/checkpoint_*")):
            seen["trial"] = running[0]
            return True
        return False
    try:
        wait_for(one_done_one_midway, 240, "one finished trial and one checkpointed mid-way")
        time.sleep(1.2)                        # let Tune write its periodic experiment state
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the driver and the Ray it started, at once
        proc.wait()
        log.close()
    before = state()
    interrupted = seen["trial"]
    assert interrupted not in before["outcomes"], "the trial finished before the kill; lengthen it"
    assert main(["resume", "kill"]) == 0

    c, parents, children = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    kill_children = [r for r in children if r.data.tags["zsexp.sweep"] == "kill"]
    assert len(kill_children) == 3                                   # exactly the requested trials, no duplicates
    assert len({r.data.tags["zsexp.trial_id"] for r in kill_children}) == 3
    assert [p for p in parents if p.data.tags["zsexp.sweep"] == "kill"][0].info.status == "FINISHED"
    run = next(r for r in kill_children if r.data.tags["zsexp.trial_id"] == interrupted)
    assert run.info.run_id == before["runs"][interrupted]             # re-attached, same run id
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val_precision_at_50")]
    assert max(steps) == 14 and steps.count(1) == 1                   # continued, not restarted from round 1
    # the Optuna sampler kept its history: every trial is in the durable study
    states = [t.state.name for t in optuna.load_study(study_name="kill", storage=journal_storage(sweep)).trials]
    assert states.count("COMPLETE") == 3, states
    assert json.loads((sweep / SWEEP_FILE).read_text())["status"] == "finished"



@pytest.mark.parametrize("point", ["startup", "trial_complete:1", "trial_logged:2", "summary"])
def test_kill_during_an_extension_then_resume(ray_cluster, tmp_path, point):
    """``resume --trials`` killed at any moment: a plain ``resume`` ends the extension at exactly the new N."""
    name = "g-" + point.split(":")[0].replace("_", "-")
    assert main([*SEARCH, "--name", name]) == 0
    r = _driver(["resume", name, "--trials", str(N + 2)], tmp_path, {"ZSEXP_FAULT_KILL": point}, "grow")
    assert r.returncode == -signal.SIGKILL, r.stdout[-3000:]
    assert "growing the sweep from 3 to 5 trials" in r.stdout
    assert main(["resume", name]) == 0
    _check_exactly_n(name, N + 2)


def test_an_interrupted_sweep_grows_to_exactly_n(ray_cluster, tmp_path):
    """``resume --trials`` on a sweep killed before it finished: it ends at the new N, not the old one."""
    name = "g-interrupted"
    r = _driver([*SEARCH, "--name", name], tmp_path, {"ZSEXP_FAULT_KILL": "trial_complete:1"}, "search")
    assert r.returncode == -signal.SIGKILL, r.stdout[-3000:]
    assert main(["resume", name, "--trials", str(N + 1)]) == 0
    _check_exactly_n(name, N + 1)
