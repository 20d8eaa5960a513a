"""Sweeps with a real local Ray and a real SQLite MLflow store.

Small data (synthetic-tiny), narrow nets and a few rounds keep each sweep to seconds of work;
Ray is shared across the tests of this module (``ray_cluster``) except where a test must kill a
driver together with its own Ray (the kill-and-resume test runs the sweep in a subprocess).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zsexp.cli import main
from zsexp.data import load_dataset, save_npz
from zsexp.search.storage import SWEEP_FILE, read_meta
from zsexp.tracking import client

pytestmark = pytest.mark.slow


def _runs(experiment: str):
    c = client()
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zsexp.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("zsexp.kind") == "trial"]
    return c, parents, children


def test_sweep_logs_parent_and_child_runs(ray_cluster, capsys):
    args = ["search", "zscrgan", "--dataset", "synthetic-tiny", "--trials", "3", "--name", "mlf",
            "--set", "em_iterations=4", "--max-concurrent", "2", "--progress-every", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "zsexp ui" in out and "running" in out
    c, parents, children = _runs("zsexp-zscrgan-synthetic-tiny")
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    tags = parent.data.tags
    assert tags["zsexp.sweep"] == "mlf" and tags["zsexp.fingerprint"] == load_dataset("synthetic-tiny").fingerprint()
    assert tags["zsexp.git_commit"] and tags["zsexp.storage"].endswith("mlf")
    assert parent.info.status == "FINISHED"
    assert "search_space.json" in [a.path for a in c.list_artifacts(parent.info.run_id)]
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["zsexp.outcome"] in ("completed", "early-stopped")
        # the full flat config: every ZSCRGAN key, the same names in every run (MLflow compare view)
        assert {"alpha", "beta", "lam", "d_steps", "g_hidden", "variant"} <= set(run.data.params)
        hist = c.get_metric_history(run.info.run_id, "val_precision_at_50")
        assert [m.step for m in hist] == list(range(1, len(hist) + 1)) and hist
        assert run.data.metrics["cpu_threads"] == 1              # one thread per granted CPU (1 each)
        assert run.data.metrics["time_train_s"] > 0 and run.data.metrics["time_checkpoint_s"] > 0
        arts = [a.path for a in c.list_artifacts(run.info.run_id, "best_checkpoint")]
        assert arts == ["best_checkpoint/model.pt"]
    assert main(["status", "mlf"]) == 0
    status = capsys.readouterr().out
    assert status.count("TERMINATED") == 3
    # without a name: every sweep, a line each; a broken one is named, not hiding the others
    broken = Path(read_meta("mlf", None).dir).parent / "broken"
    broken.mkdir()
    (broken / SWEEP_FILE).write_text("{not json")
    assert main(["status", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(ln for ln in lines if ln.startswith("mlf "))
    assert "finished" in row and "3/3" in row, row
    assert f"{rows['mlf']['best']:.3f}" in row and f"{rows['mlf']['baseline']:.3f}" in row, row
    assert any(ln.startswith("broken ") and "unreadable" in ln for ln in lines), lines
    assert rows["mlf"]["finished"] == 3 and rows["mlf"]["baseline"] is not None and "error" in rows["broken"]


def test_cmgan_sweep_with_list_params(ray_cluster):
    assert main(["search", "cmgan", "--trials", "2", "--name", "cm", "--scheduler", "none",
                 "--set", "iters_per_step=40", "--set", "max_steps=2", "--progress-every", "0"]) == 0
    c, _, children = _runs("zsexp-cmgan-synthetic-tiny")
    assert len(children) == 2
    lam = children[0].data.params["lambda_c"]          # lambda_c[i] searched -> a list param
    assert lam.count("x") == 2
    assert "val_zsl_mfr" in children[0].data.metrics


def test_diverging_trials_fail_cleanly(ray_cluster, tmp_path, capsys):
    data = load_dataset("synthetic-tiny")
    huge = dataclasses.replace(data, features=np.full_like(data.features, 3e38))
    save_npz(huge, tmp_path / "huge.npz")
    assert main(["search", "zscrgan", "--dataset", str(tmp_path / "huge.npz"), "--trials", "3", "--name", "nan",
                 "--set", "em_iterations=3", "--max-failed-trials", "0", "--max-concurrent", "1",
                 "--progress-every", "0"]) == 0
    out = capsys.readouterr().out
    c, _, children = _runs("zsexp-zscrgan-huge")
    failed = [r for r in children if r.data.tags.get("zsexp.outcome") == "failed"]
    assert failed and all(r.info.status == "FAILED" for r in failed)
    assert "diverged" in failed[0].data.tags["zsexp.error"]
    # failure budget 0: the sweep stopped after the first failure instead of running all 3
    assert len(children) < 3 and "failed" in out


def test_gpu_budget_and_simulated_concurrency(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--gpus", "8", "--trials", "1"]) == 2
    assert "has 4 GPU(s)" in capsys.readouterr().err
    assert main(["search", "zscrgan", "--trials", "6", "--name", "gpu", "--gpus", "4", "--gpus-per-trial", "0.5",
                 "--cpus-per-trial", "0.25", "--scheduler", "none", "--set", "em_iterations=12",
                 "--progress-every", "0"]) == 0
    meta = read_meta("gpu", None)
    progress = json.loads((Path(meta.dir) / "zsexp_progress.json").read_text())
    # 2 CPUs would allow 2 one-CPU trials; the GPU fractions let more run at once
    assert progress["peak"] > 2


def test_grid_sweep_visits_every_point_once(ray_cluster, tmp_path, capsys):
    import yaml

    space = tmp_path / "grid.yaml"
    space.write_text(yaml.safe_dump({
        "model": "zscrgan", "sampler": {"name": "grid"}, "scheduler": "none",
        "fixed": {"em_schedule": "fixed", "updates_per_step": 5, "em_iterations": 2},
        "params": {"alpha": {"type": "categorical", "choices": [0.1, 1.0]},
                   "beta": {"type": "categorical", "choices": [0.5, 2.0]}}}))
    assert main(["search", "zscrgan", "--space", str(space), "--trials", "5", "--name", "g5"]) == 2
    assert "the grid has 4 points" in capsys.readouterr().err
    assert main(["search", "zscrgan", "--space", str(space), "--trials", "4", "--name", "grid", "--seed", "3",
                 "--progress-every", "0"]) == 0
    c, _, children = _runs("zsexp-zscrgan-synthetic-tiny")
    points = sorted((float(r.data.params["alpha"]), float(r.data.params["beta"])) for r in children
                    if r.data.tags.get("zsexp.sweep") == "grid")
    assert points == [(0.1, 0.5), (0.1, 2.0), (1.0, 0.5), (1.0, 2.0)]
    assert {r.data.tags["zsexp.outcome"] for r in children if r.data.tags.get("zsexp.sweep") == "grid"} == {"completed"}


def _wait_for(pred, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_and_resume(ray_cluster, tmp_path):
    home = Path(os.environ["ZSEXP_HOME"])
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--trials", "4", "--name", "kill",
           "--max-concurrent", "1", "--scheduler", "none", "--set", "em_iterations=14", "--set", "em_schedule=fixed",
           "--set", "updates_per_step=40", "--progress-every", "0"]
    log = open(tmp_path / "driver.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sweep = home / "sweeps" / "kill"

    def state():
        p = sweep / "zsexp_progress.json"
        return json.loads(p.read_text()) if p.is_file() else {}

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
        _wait_for(one_done_one_midway, 240, "one finished trial and one checkpointed mid-way")
        time.sleep(1.2)                        # let Tune write its periodic experiment state
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the driver and the Ray it started, at once
        proc.wait()
        log.close()
    before = state()
    interrupted = seen["trial"]
    assert interrupted not in before["outcomes"], "the trial finished before the kill; lengthen it"
    assert main(["resume", "kill"]) == 0

    c, parents, children = _runs("zsexp-zscrgan-synthetic-tiny")
    kill_children = [r for r in children if r.data.tags["zsexp.sweep"] == "kill"]
    assert len(kill_children) == 4                                   # exactly the requested trials, no duplicates
    assert len({r.data.tags["zsexp.trial_id"] for r in kill_children}) == 4
    assert [p for p in parents if p.data.tags["zsexp.sweep"] == "kill"][0].info.status == "FINISHED"
    run = next(r for r in kill_children if r.data.tags["zsexp.trial_id"] == interrupted)
    assert run.info.run_id == before["runs"][interrupted]             # re-attached, same run id
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val_precision_at_50")]
    assert max(steps) == 14 and steps.count(1) == 1                   # continued, not restarted from round 1
    # the Optuna sampler kept its history: every trial is in the restored study
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(sweep))
    states = [t.state.name for t in searcher._ot_study.trials]
    assert states.count("COMPLETE") == 4, states
    assert json.loads((sweep / SWEEP_FILE).read_text())["status"] == "finished"


def test_ui_serves_zsexp_store(tmp_path, mlflow_ui_up):
    """`zsexp ui` starts a real MLflow UI on zsexp's SQLite store; it answers /health, then stops."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: mlflow_ui_up(port), 120, "the MLflow UI")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
