"""End to end: sweep -> select (k=2, seeds=2) -> promote -> load by alias in a new process -> predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zsexp.cli import main
from zsexp.search.storage import read_meta
from zsexp.selection import fmt_stats, paired_test, summarise
from zsexp.tracking import client

pytestmark = pytest.mark.slow

LOAD_AND_PREDICT = """
import json, sys
import mlflow, numpy as np
from zsexp.data import load_dataset
model = mlflow.pyfunc.load_model(sys.argv[1])
d = load_dataset("synthetic-tiny")
imgs = d.images("test")
out = model.predict({"queries": d.class_embeddings[d.test_classes], "gallery": d.features[imgs]}, params={"k": 50})
rel = d.labels[imgs][out["indices"]] == d.test_classes[:, None]
print(json.dumps({"p50": float(100 * rel.mean()), "shape": list(out["indices"].shape)}))
"""


def w_stats(result: dict) -> dict:
    return result["summary"][result["winner"]]["stats"]["precision@50"]


def test_sweep_select_promote_serve(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--trials", "3", "--name", "e2e", "--set", "em_iterations=5",
                 "--progress-every", "0"]) == 0
    out = capsys.readouterr().out
    meta = read_meta("e2e", None)
    base_val = meta.reference["baseline"]["val"]["precision@50"]       # tuned on val, fitted on train
    assert meta.reference["baseline"]["model"] == "ridge" and meta.reference["chance"]["precision@50"] > 0
    assert f"val precision@50={base_val:.3f}" in out and "chance" in out
    parent = client().get_run(meta.parent_run_id).data
    assert parent.metrics["baseline_val_precision_at_50"] == pytest.approx(base_val)
    assert parent.metrics["best_margin_over_baseline"] == pytest.approx(
        parent.metrics["best_val_precision_at_50"] - base_val)
    assert main(["status", "e2e"]) == 0
    assert "baseline ridge" in capsys.readouterr().out
    assert main(["select", "e2e", "--k", "2", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "Wilcoxon" in out and "@candidate" in out
    assert "beside it on the same test split: ridge" in out and "paired Wilcoxon over 6 test queries" in out
    sel = Path(read_meta("e2e", None).dir) / "selection-k2-s2"
    result = json.loads((sel / "selection.json").read_text())
    assert len(result["summary"]) == 2 and all(s["stats"]["precision@50"]["n"] == 2 for s in result["summary"])
    # the decision is the validation mean; every run trains its candidate's best-round budget
    vals = [s["val"]["mean"] for s in result["summary"]]
    assert vals[result["winner"]] == max(vals)
    runs = [json.loads(p.read_text()) for p in sel.glob("c*-s*-*.json")]
    assert len(runs) == 8 and {r["fit"] for r in runs} == {"train", "trainval"}
    for r in runs:
        assert r["rounds"] == result["summary"][r["candidate"]]["budget_rounds"]
    assert "never to choose" in (sel / "report.md").read_text()
    for png in ("candidates.png", "history.png", "importance.png"):
        assert (sel / png).stat().st_size > 1000
    report = (sel / "report.md").read_text()
    assert "Winner" in report and "p =" in report
    # the baseline on the same test split, with chance and a paired test over the 6 test queries
    b = result["baseline"]
    assert b["model"] == "ridge" and b["test"]["unit"] == "query" and b["test"]["n"] == 6
    assert b["chance"]["precision@50"] == pytest.approx(100 / 6, abs=0.5)     # 6 test classes, equal sizes
    assert f"| precision@50 | {fmt_stats(w_stats(result))} | {b['metrics']['precision@50']:.2f} |" in report
    page = (sel / "report.html").read_text()          # self-contained: the figures are inside
    assert "<table>" in page and page.count("data:image/png;base64,") == 3 and "Winner" in page
    name = result["registered_model"]

    # MLflow: one selection run, a nested run per configuration x seed, the report as artifacts
    c = client()
    sel_run = c.get_run(result["selection_run"])
    assert sel_run.data.tags["zsexp.k"] == "2" and sel_run.data.tags["zsexp.seeds"] == "2"
    nested = c.search_runs([sel_run.info.experiment_id],
                           filter_string=f"tags.`mlflow.parentRunId` = '{sel_run.info.run_id}'")
    assert len(nested) == 8           # (configuration, seed) x (validation run, final run)
    assert {"report/report.md", "report/report.html"} <= {a.path for a in c.list_artifacts(sel_run.info.run_id,
                                                                                            "report")}
    mv = c.get_model_version_by_alias(name, "candidate")
    assert mv.tags["zsexp.sweep"] == "e2e" and "test.precision_at_50" in mv.tags
    w = result["summary"][result["winner"]]
    assert float(mv.tags["zsexp.val_objective_mean"]) == pytest.approx(w["val"]["mean"])
    assert mv.tags["zsexp.n_seeds"] == "2" and "nearest" in mv.tags["zsexp.seed_rule"]
    assert mv.tags["zsexp.seed"] == str(result["winner_seed"])

    # running select again redoes nothing and registers nothing new
    assert main(["select", "e2e", "--k", "2", "--seeds", "2"]) == 0
    assert "8 of 8 runs already finished" in capsys.readouterr().out
    assert len(c.search_model_versions(f"name = '{name}'")) == 1

    # promote, then load by alias in a fresh process and check the ranking against evaluate()
    assert main(["promote", name]) == 0
    champion = c.get_model_version_by_alias(name, "champion")
    assert champion.tags["zsexp.previous_champion"] == "none" and champion.tags["zsexp.promoted_champion_at"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(os.environ['ZSEXP_HOME']) / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, f"models:/{name}@champion"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    winner = [json.loads(p.read_text()) for p in sel.glob("c*-s*-test.json")]
    registered = next(r for r in winner if r["model_path"].endswith(
        f"c{result['winner']}-s{result['winner_seed']}-test.model.pt"))
    assert served["shape"] == [6, 50]
    assert served["p50"] == pytest.approx(registered["metrics"]["precision@50"], abs=1e-3)

    # the registered model is code + weights: no pickled Python object anywhere in it
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    files = [p.name for p in local.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    assert any(f.endswith(".py") for f in files) and any(f.endswith(".pt") for f in files)


def test_promote_refuses_a_worse_version(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--trials", "2", "--name", "p1", "--set", "em_iterations=3",
                 "--progress-every", "0"]) == 0
    assert main(["select", "p1", "--k", "1", "--seeds", "1", "--register-as", "reg"]) == 0
    c = client()
    v1 = c.get_model_version_by_alias("reg", "candidate")
    assert main(["promote", "reg"]) == 0
    # a second version that claims a worse test objective
    c.set_registered_model_alias("reg", "candidate", v1.version)
    src = c.get_model_version("reg", v1.version)
    v2 = c.create_model_version("reg", src.source, run_id=src.run_id)
    for k, v in src.tags.items():
        c.set_model_version_tag("reg", v2.version, k, v)
    worse = str(float(src.tags["zsexp.test_objective_mean"]) - 5)
    c.set_model_version_tag("reg", v2.version, "zsexp.test_objective_mean", worse)
    capsys.readouterr()
    assert main(["promote", "reg", "--version", str(v2.version)]) == 2
    err = capsys.readouterr().err
    assert "refusing to move @champion" in err and "only guards against a regression" in err
    assert c.get_model_version_by_alias("reg", "champion").version == v1.version
    assert main(["promote", "reg", "--version", str(v2.version), "--force"]) == 0
    now = c.get_model_version("reg", v2.version)
    assert c.get_model_version_by_alias("reg", "champion").version == v2.version
    assert now.tags["zsexp.previous_champion"] == str(v1.version)
    assert main(["promote", "reg", "--list"]) == 0
    assert "champion" in capsys.readouterr().out


def test_statistics_helpers():
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["ci95_low"] < 2.0 < s["ci95_high"]
    a = {i: float(i) for i in range(10)}
    b = {i: float(i) + 1.0 + 0.01 * i for i in range(10)}
    t = paired_test(a, b)
    assert t["significant"] and t["p_value"] < 0.05
    same = paired_test(a, dict(a))
    assert not same["significant"] and same["p_value"] == 1.0


def test_cmgan_selection_with_paper_validation_objective(ray_cluster, tmp_path, capsys):
    """A CM-GAN sweep on the paper's own validation measure (L_sup, §4.4) decides on validation L_sup and
    reports test MFR."""
    import yaml

    from zsexp.search.space import default_space_path

    raw = yaml.safe_load(default_space_path("cmgan").read_text())
    raw["objective"] = {"metric": "val_lsup", "mode": "min"}
    space = tmp_path / "lsup.yaml"
    space.write_text(yaml.safe_dump(raw))
    assert main(["search", "cmgan", "--space", str(space), "--trials", "2", "--name", "cml", "--scheduler", "none",
                 "--set", "iters_per_step=30", "--set", "max_steps=2", "--progress-every", "0"]) == 0
    assert main(["select", "cml", "--k", "2", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "test zsl/mfr (report)" in out
    sel = json.loads((Path(read_meta("cml", None).dir) / "selection-k2-s2" / "selection.json").read_text())
    assert sel["objective"] == "val_lsup" and sel["test_objective"] == "zsl/mfr" and sel["test_mode"] == "min"
    # CM-GAN's task baseline beside it: ridge-zsl, paired over the test images
    assert sel["baseline"]["model"] == "ridge-zsl" and sel["baseline"]["test"]["unit"] == "image"
    assert "zsl/mfr" in sel["baseline"]["metrics"] and sel["baseline"]["chance"]["zsl/mfr"] == pytest.approx(
        100 * 7 / 12)
