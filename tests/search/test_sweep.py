"""Sweeps on a real local Ray with a real SQLite MLflow store: runs, status, failures, GPU fractions, grids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import DIVERGE, cli, mlflow_runs
from zsexp.cli import main
from zsexp.data import load_dataset, save_npz
from zsexp.search.record import read_progress
from zsexp.search.storage import SWEEP_FILE, read_meta

pytestmark = pytest.mark.slow


def test_sweep_logs_parent_and_child_runs(ray_cluster, capsys):
    args = ["search", "zscrgan", "--dataset", "synthetic-tiny", "--trials", "3", "--name", "mlf",
            "--set", "em_iterations=4", "--set", "updates_per_step=10", "--max-concurrent", "2",
            "--progress-every", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "best trial" in out and "zsexp ui" in out and "running" in out
    c, parents, children = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
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
    c, _, children = mlflow_runs("zsexp-cmgan-synthetic-tiny")
    assert len(children) == 2
    lam = children[0].data.params["lambda_c"]          # lambda_c[i] searched -> a list param
    assert lam.count("x") == 2
    assert "val_zsl_mfr" in children[0].data.metrics


def test_diverging_trials_fail_cleanly(ray_cluster, tmp_path, capsys):
    data = load_dataset("synthetic-tiny")
    near_limit = 3e38 * (1 - 0.01 * data.features / np.abs(data.features).max())       # huge, not constant
    huge = dataclasses.replace(data, features=near_limit.astype(np.float32))
    save_npz(huge, tmp_path / "huge.npz")
    assert main(["search", "zscrgan", "--dataset", str(tmp_path / "huge.npz"), "--trials", "3", "--name", "nan",
                 "--set", "em_iterations=3", "--max-failed-trials", "0", "--max-concurrent", "1",
                 "--progress-every", "0"]) == 0
    out = capsys.readouterr().out
    c, _, children = mlflow_runs("zsexp-zscrgan-huge")
    failed = [r for r in children if r.data.tags.get("zsexp.outcome") == "failed"]
    assert failed and all(r.info.status == "FAILED" for r in failed)
    assert "diverged" in failed[0].data.tags["zsexp.error"]
    # failure budget 0: the sweep stopped after the first failure instead of running all 3
    assert len(children) < 3 and "failed" in out


def test_a_relative_dataset_path_reaches_the_trials(home, ray_cluster, capfd, monkeypatch):
    """Trials run in their own working directory: a relative --dataset is made absolute for them."""
    save_npz(load_dataset("synthetic-tiny"), home.parent / "mine.npz")
    res = cli(home, "search", "zscrgan", "--dataset", "mine.npz", "--trials", "1", "--name", "rel", "--set",
              "em_iterations=1", "--set", "updates_per_step=10", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr[-2000:]
    meta = json.loads((home / "sweeps" / "rel" / "zsexp_sweep.json").read_text())
    assert meta["dataset"] == str(home.parent / "mine.npz") and "1 completed" in res.stdout


def test_every_trial_failing_exits_nonzero_and_closes_the_parent(home, ray_cluster, capfd, monkeypatch):
    """In-range settings that diverge fail every trial: the sweep exits 2 with a summary line, its MLflow
    parent run is FAILED (never RUNNING) and `zsexp status` says failed."""
    res = cli(home, "search", "zscrgan", "--trials", "1", "--name", "nan", *DIVERGE, capfd=capfd,
              monkeypatch=monkeypatch)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("zsexp: error")]
    assert len(lines) == 1 and "every one of the sweep's 1 trials failed" in lines[0]
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = c.get_experiment_by_name("zsexp-zscrgan-synthetic-tiny")
    parent = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("zsexp.kind") == "sweep"][0]
    assert parent.info.status == "FAILED" and "failed" in parent.data.tags["zsexp.error"]
    st = cli(home, "status", "nan", capfd=capfd, monkeypatch=monkeypatch)
    assert "status failed" in st.stdout


def test_gpu_budget_and_simulated_concurrency(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--gpus", "8", "--trials", "1"]) == 2
    assert "has 4 GPU(s)" in capsys.readouterr().err
    assert main(["search", "zscrgan", "--trials", "4", "--name", "gpu", "--gpus", "4", "--gpus-per-trial", "0.5",
                 "--cpus-per-trial", "0.25", "--scheduler", "none", "--set", "em_iterations=8",
                 "--set", "updates_per_step=30", "--progress-every", "0"]) == 0
    meta = read_meta("gpu", None)
    progress = read_progress(meta.dir)
    # 2 CPUs would allow 2 one-CPU trials; the GPU fractions let more run at once
    assert progress["peak"] > 2, progress["peak"]
    # compute as a metric: every round's wall, CPU- and GPU-seconds (half a GPU held), the totals on the
    # child runs (one point per round, the last the total), the sweep's on the parent run and in status
    from tests.helpers import mlflow_runs

    c, parents, children = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    kids = [r for r in children if r.data.tags["zsexp.sweep"] == "gpu"]
    parent = next(r for r in parents if r.data.tags["zsexp.sweep"] == "gpu")
    for r in kids:
        m = r.data.metrics
        assert m["compute_wall_s"] > 0 and m["compute_cpu_s"] > 0
        assert abs(m["compute_gpu_s"] - 0.5 * m["compute_wall_s"]) < 1e-6 * max(1.0, m["compute_wall_s"])
        walls = [x.value for x in sorted(c.get_metric_history(r.info.run_id, "compute_wall_s"),
                                         key=lambda x: (x.step, x.timestamp))]
        assert len(walls) >= 8 and walls == sorted(walls) and walls[-1] == m["compute_wall_s"]
        assert progress["spent"][r.data.tags["zsexp.trial_id"]]["compute_wall_s"] == m["compute_wall_s"]
    for key in ("compute_wall_s", "compute_cpu_s", "compute_gpu_s"):
        total = sum(r.data.metrics[key] for r in kids)
        assert abs(parent.data.metrics[key] - total) < 1e-6 * max(1.0, total), key


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
    c, _, children = mlflow_runs("zsexp-zscrgan-synthetic-tiny")
    points = sorted((float(r.data.params["alpha"]), float(r.data.params["beta"])) for r in children
                    if r.data.tags.get("zsexp.sweep") == "grid")
    assert points == [(0.1, 0.5), (0.1, 2.0), (1.0, 0.5), (1.0, 2.0)]
    assert {r.data.tags["zsexp.outcome"] for r in children if r.data.tags.get("zsexp.sweep") == "grid"} == {"completed"}

