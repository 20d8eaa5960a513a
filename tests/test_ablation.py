"""``zsexp ablate``: variants, a tiny real ablation through the CLI (Ray trials, MLflow runs, the table's
statistics recomputed from the runs), resume after a kill, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tests.helpers import CLI, assert_refused, cli, cli_env, copy_home
from zsexp.ablation.variants import named_variants, reference_index, resolve_variants
from zsexp.errors import ZsexpError
from zsexp.tracking import client

TINY = ["--set", "em_iterations=2", "--set", "updates_per_step=10"]


# --------------------------------------------------------------------------- variants
def test_table_rows_follow_the_paper_and_name_the_complete_model():
    z = resolve_variants("zscrgan", "table")
    assert [v.overrides["ablation"] for v in z] == ["none", "no_wrong", "no_r_triplet", "no_triplet", "no_r", "no_gan"]
    assert reference_index("zscrgan", z) == 0 and z[0].paper["precision@50"]["CUB"] == 51.7
    c = resolve_variants("cmgan", "table")
    assert [v.label for v in c][0] == "Init. CONSE" and reference_index("cmgan", c) == 5     # paper order, CM-GAN last
    assert c[5].paper["zsl/mfr"]["ImageNet"] == 9.98


def test_named_variants_add_the_complete_model_once():
    assert {"no_gan", "training=joint", "wrong_class=kmeans", "wrong_class=similar"} <= set(named_variants("zscrgan"))
    assert "mode=sentence" in named_variants("cmgan") and "full" not in named_variants("cmgan")
    v = resolve_variants("zscrgan", "no_gan,training=joint,no_gan")
    assert [x.key for x in v] == ["ablation=none", "ablation=no_gan", "training=joint"]
    assert v[1].label == "w/o GAN" and v[2].overrides == {"training": "joint"}
    both = resolve_variants("zscrgan", "table,wrong_class=kmeans")
    assert len(both) == 7 and both[-1].slug == "wrong_class-kmeans"
    with pytest.raises(ZsexpError, match="unknown variant 'no_such'.*no_gan"):
        resolve_variants("zscrgan", "no_such")


@pytest.mark.parametrize("args,needle", [
    (["--variants", "no_such"], "unknown variant 'no_such'"),
    (["--variants", "bogus_key=1"], "bogus_key"),
    (["--variants", "training=sometimes"], "training"),
    (["--variants", "no_gan,,no_r"], "empty name"),
    (["--seeds", "0"], "--seeds"),
    (["--data-seeds", "-1"], "--data-seeds"),
    (["--from", "nope"], "no sweep 'nope'"),
    (["--name", "../out"], "ablation name"),
    (["--dataset", "/no/such/data.npz"], "not found"),
    (["--gpus-per-trial", "0.5"], "--gpus"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial must be > 0"),
    (["--gpus", "nan"], "--gpus: must be a finite number"),
    (["--tracking-uri", "ftp://x/y"], "unsupported scheme"),
])
def test_bad_input_is_one_line(home, capfd, monkeypatch, args, needle):
    res = cli(home, "ablate", "zscrgan", *args, *TINY, capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, needle)
    assert not (home / "ablations").exists() or not any((home / "ablations").iterdir())


def _result(key: str, seed: int, p50: list[float] | None) -> dict:
    if p50 is None:
        return {"variant": key, "seed": seed, "data_seed": 0, "metrics": {}, "per": {}, "diverged": "loss_d is nan"}
    return {"variant": key, "seed": seed, "data_seed": 0, "chance": {"precision@50": 10.0},
            "metrics": {"precision@50": float(np.mean(p50)), "map@50": 1.0, "top1": 2.0},
            "per": {"per_query": {"precision": p50}, "query_classes": list(range(len(p50)))}}


def test_table_statistics_and_a_diverged_run(tiny, tmp_path):
    """Cells are the runs' means; the paired test is over queries averaged over seeds; a diverged run is
    reported in its row (its other runs still make the cells) and makes the row not comparable."""
    from types import SimpleNamespace

    from zsexp.ablation.table import summarise_table, write_table

    variants = resolve_variants("zscrgan", "no_gan,no_r")
    plan = SimpleNamespace(model="zscrgan", dataset="synthetic-tiny", dataset_name="synthetic-tiny", base="defaults",
                           budget=None, data_seeds=(0,), variants=variants)
    ref = [[10, 20, 30, 40, 50, 60], [20, 20, 30, 40, 50, 80]]
    gan = [[0, 10, 10, 20, 30, 30], [10, 10, 20, 30, 30, 40]]
    results = [_result("ablation=none", s, ref[s]) for s in (0, 1)] + \
        [_result("ablation=no_gan", s, gan[s]) for s in (0, 1)] + \
        [_result("ablation=no_r", 0, [5, 5, 5, 5, 5, 5]), _result("ablation=no_r", 1, None)]
    t = summarise_table(plan, results, 0, {0: None}, {0: tiny}, seeds=2)
    rows = {r["key"]: r for r in t["rows"]}
    assert rows["ablation=none"]["cells"]["precision@50"]["mean"] == pytest.approx(np.mean([np.mean(x) for x in ref]))
    want = stats.wilcoxon(np.mean(gan, axis=0), np.mean(ref, axis=0)).pvalue
    assert rows["ablation=no_gan"]["vs_complete"]["p_value"] == pytest.approx(want)
    assert rows["ablation=no_gan"]["vs_complete"]["n"] == 6 and t["n_units"] == 6
    no_r = rows["ablation=no_r"]
    assert no_r["diverged"] == 1 and no_r["cells"]["precision@50"]["n"] == 1
    assert no_r["vs_complete"]["p_value"] is None and t["baseline"] is None
    write_table(t, tmp_path)
    md = (tmp_path / "table.md").read_text()
    assert "(1 of 2 runs diverged to NaN)" in md and "not comparable" in md and "| chance | 10.00 |" in md


def test_data_label_names_the_splits():
    from zsexp.ablation.job import data_label

    assert data_label(["synthetic-cub"]) == "synthetic-cub"
    assert data_label(["synthetic-tiny"] * 2) == "synthetic-tiny, 2 data splits"
    assert data_label([f"uci-mfeat-fourier-pixels-split{i}" for i in range(5)]) == \
        "uci-mfeat-fourier-pixels, 5 data splits"


def test_one_writer_per_ablation(home, capfd, monkeypatch):
    from zsexp.search.lock import SweepLock

    with SweepLock(home / "ablations", "busy", "ablate", kind="ablation"):
        res = cli(home, "ablate", "zscrgan", "--name", "busy", *TINY, capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "ablation 'busy' is in use")
    assert not (home / "ablations" / "busy").exists()


def test_list_variants(home, capfd, monkeypatch):
    res = cli(home, "ablate", "cmgan", "--list-variants", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0 and "ablation=full   (complete model)" in res.stdout
    assert "Table 5" in res.stdout and "(complete model)" in res.stdout and "mode=sentence" in res.stdout
    assert_refused(cli(home, "ablate", "ridge", capfd=capfd, monkeypatch=monkeypatch), "no ablation table")


# --------------------------------------------------------------------------- a tiny real ablation
def _mlflow(home: Path, name: str):
    c = client(f"sqlite:///{home / 'mlflow.db'}")
    runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id], max_results=1000)
            if r.data.tags.get("zsexp.ablation") == name]
    parents = [r for r in runs if r.data.tags["zsexp.kind"] == "ablation"]
    nested = [r for r in runs if r.data.tags["zsexp.kind"] == "ablation-run"]
    return c, parents, nested


def test_tiny_ablation_through_the_cli(home, ray_cluster, capfd, monkeypatch):
    args = ["ablate", "zscrgan", "--variants", "no_gan", "--seeds", "2", "--name", "tiny", *TINY]
    res = cli(home, *args, capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "0 of 4 runs already finished" in res.stdout and "| w/o GAN |" in res.stdout
    out = home / "ablations" / "tiny"
    table = json.loads((out / "ablation.json").read_text())
    runs = {p.name: json.loads(p.read_text()) for p in out.glob("ablation-*.s*.d*.json")}
    assert len(runs) == 4 and {r["fit"] for r in runs.values()} == {"trainval"}
    assert not list(out.glob("*.ckpt.pt"))                       # round checkpoints go once a run is done

    # MLflow: one ablation run, one nested run per row x seed x split with its metrics and checkpoint
    c, parents, nested = _mlflow(home, "tiny")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(nested) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in nested} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in nested)
    for r in nested:
        own = runs[r.data.tags["zsexp.run"] + ".json"]
        assert r.data.metrics["test_precision_at_50"] == pytest.approx(own["metrics"]["precision@50"])
        assert [a.path for a in c.list_artifacts(r.info.run_id, "checkpoint")]
    assert {a.path for a in c.list_artifacts(parents[0].info.run_id, "table")} >= {"table/table.md", "table/table.png"}

    # every cell is the mean of its runs' metrics; the paired test is over the test queries, seeds averaged
    rows = {r["key"]: r for r in table["rows"]}
    for key, row in rows.items():
        mine = [r for r in runs.values() if r["variant"] == key]
        for m in ("precision@50", "map@50", "top1"):
            assert row["cells"][m]["mean"] == pytest.approx(np.mean([r["metrics"][m] for r in mine]))
            assert row["cells"][m]["n"] == 2
        parent_metric = parents[0].data.metrics[f"{key.replace('=', '-')}_test_precision_at_50_mean"]
        assert parent_metric == pytest.approx(row["cells"]["precision@50"]["mean"])

    def units(key):
        return np.mean([r["per"]["per_query"]["precision"] for r in runs.values() if r["variant"] == key], axis=0)

    a, b = units("ablation=no_gan"), units("ablation=none")
    test = rows["ablation=no_gan"]["vs_complete"]
    assert test["unit"] == "query" and test["n"] == a.size == 6            # synthetic-tiny: 6 test classes
    if not np.allclose(a, b):
        assert test["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    base = table["baseline"]
    assert base["model"] == "ridge" and base["vs_complete"]["n"] == 6
    assert table["chance"]["precision@50"] == pytest.approx(100 / 6, abs=0.5)
    md = (out / "table.md").read_text()
    assert "ridge baseline" in md and "| chance |" in md and "6 test queries" in md
    assert "data:image/png;base64," in (out / "table.html").read_text()

    # the same command again: nothing trained, nothing logged twice
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.model.pt")}
    res = cli(home, *args, capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0 and "4 of 4 runs already finished" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.model.pt")} == stamp
    assert [len(x) for x in _mlflow(home, "tiny")[1:]] == [1, 4]
    # another base configuration under the same name is refused, not mixed in
    res = cli(home, *args[:-1], "updates_per_step=11", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "another")


def test_cmgan_rows_are_compared_over_test_images(home, ray_cluster, capfd, monkeypatch):
    res = cli(home, "ablate", "cmgan", "--variants", "conse", "--seeds", "1", "--data-seeds", "0", "1",
              "--name", "cm", "--set", "iters_per_step=20", "--set", "max_steps=2",
              "--gpus", "2", "--gpus-per-trial", "0.5",        # the shared Ray's logical GPUs; runs fall back to CPU
              capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr[-3000:]
    out = home / "ablations" / "cm"
    table = json.loads((out / "ablation.json").read_text())
    runs = [json.loads(p.read_text()) for p in out.glob("ablation-*.json")]
    assert len(runs) == 4 and table["data_seeds"] == [0, 1] and table["objective"] == "zsl/mfr"
    n_images = sum(len(r["per"]["image_labels"]) for r in runs if r["variant"] == "ablation=full")
    assert table["rows"][0]["complete"] and table["rows"][1]["key"] == "ablation=conse"   # named: complete first
    assert table["rows"][1]["vs_complete"]["unit"] == "image" and table["n_units"] == n_images
    assert table["baseline"]["model"] == "ridge-zsl" and len(table["baseline"]["lam"]) == 2
    assert "paper (ImageNet)" not in (out / "table.md").read_text()          # synthetic-tiny is no ImageNet


def test_diverged_runs_are_reported_and_a_relative_path_reaches_the_runs(home, ray_cluster, capfd, monkeypatch):
    """Features near float32's limit make every run diverge: each run is recorded as diverged (not retried,
    not lost), the table says so, and the command exits 2 with one line.  The data is given as a path
    relative to the working directory, which the Ray runs do not share."""
    import dataclasses

    from zsexp.data import load_dataset, save_npz

    data = load_dataset("synthetic-tiny")
    # near float32's limit (and not constant: a constant view is refused as degenerate)
    huge = (3e38 * (1 - 0.01 * data.features / np.abs(data.features).max())).astype(np.float32)
    save_npz(dataclasses.replace(data, features=huge), home.parent / "huge.npz")
    res = cli(home, "ablate", "zscrgan", "--dataset", "huge.npz", "--variants", "no_gan", "--seeds", "1",
              "--name", "nan", *TINY, capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "diverged")
    out = home / "ablations" / "nan"
    runs = [json.loads(p.read_text()) for p in out.glob("ablation-*.json")]
    assert len(runs) == 2 and all("nan" in r["diverged"].lower() for r in runs)
    assert "(1 of 1 runs diverged to NaN)" in (out / "table.md").read_text()
    assert [x[0].info.status for x in _mlflow(home, "nan")[1:2]] == ["FINISHED"]


def test_from_sweep_uses_its_winner_and_budget(template, tmp_path, ray_cluster, capfd, monkeypatch):
    h = copy_home(template, tmp_path)
    res = cli(h, "ablate", "zscrgan", "--from", "base", "--data-seeds", "3", capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "data split 0")
    res = cli(h, "ablate", "zscrgan", "--from", "base", "--variants", "no_r", "--seeds", "1",
              capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "base: sweep base: its best trial" in res.stdout
    out = h / "ablations" / "zscrgan-synthetic-tiny-ablation-from-base"
    table = json.loads((out / "ablation.json").read_text())
    assert table["budget"] == 1
    assert all(json.loads(p.read_text())["rounds"] == 1 for p in out.glob("ablation-*.json"))
    sweep_exp = json.loads((h / "sweeps" / "base" / "zsexp_sweep.json").read_text())["experiment"]
    assert table["experiment"] == sweep_exp


def test_a_killed_ablation_resumes_without_training_finished_runs(home):
    """SIGKILL of the driver's process group once the first run finished; the same command then trains
    only the others, and MLflow ends with one run per model."""
    args = [*CLI, "ablate", "zscrgan", "--variants", "no_gan", "--seeds", "2", "--name", "k", "--max-concurrent", "1",
            *TINY]
    p = subprocess.Popen(args, env=cli_env(home, ZSEXP_FAULT_KILL="ablate_run:1"), cwd=home.parent,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first, _ = p.communicate(timeout=240)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL, first[-3000:]
    out = home / "ablations" / "k"
    done = {f.name: f.stat().st_mtime_ns for f in out.glob("ablation-*.json")}
    assert len(done) == 1, first[-2000:]
    res = subprocess.run(args, env=cli_env(home), cwd=home.parent, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "1 of 4 runs already finished" in res.stdout
    assert {f: (out / f).stat().st_mtime_ns for f in done} == done           # not trained again
    assert len(list(out.glob("ablation-*.json"))) == 4
    assert [len(x) for x in _mlflow(home, "k")[1:]] == [1, 4]
