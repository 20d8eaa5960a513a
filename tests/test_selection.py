"""Final selection: decided on validation only, budgets from the sweep, statistics, the job end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli
from zsexp.cli import main
from zsexp.meta import TrialRecord
from zsexp.search.space import load_space
from zsexp.search.storage import read_meta
from zsexp.selection import choose_winner, decide, fmt_stats, paired_test, rank_configs, summarise, typical_seed
from zsexp.tracking import client

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the decision
def _space():
    return load_space(None, "zscrgan")


def _runs(ci: int, val: list[float], test: list[float]) -> list[dict]:
    out = []
    for s, (v, t) in enumerate(zip(val, test, strict=True)):
        out.append({"candidate": ci, "seed": s, "phase": "val", "metrics": {"precision@50": v}})
        per = {"per_query": {"precision": [t, t], "ap": [t, t], "top1": [t, t]}, "query_classes": [1, 2]}
        out.append({"candidate": ci, "seed": s, "phase": "test", "metrics": {"precision@50": t}, "per": per,
                    "model_path": f"c{ci}-s{s}"})
    return out


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


def test_winner_and_registered_seed_come_from_validation_only():
    cands = [{"trial_id": "a", "value": 40.0, "params": {}, "round": 7},
             {"trial_id": "b", "value": 39.0, "params": {}, "round": 9}]
    # c0: better on validation, worse on test; c1 the reverse.  Seed 2 of c0 is its best on test.
    results = _runs(0, [30.0, 34.0, 31.0], [20.0, 21.0, 29.0]) + _runs(1, [28.0, 29.0, 27.0], [35.0, 36.0, 37.0])
    d = decide("zscrgan", _space(), cands, results, n_unseen=2, n_all=10)
    assert d.winner == 0                                   # validation decides, not test
    assert d.seed == 2                                     # 31 is nearest the mean 31.67, not the test-best
    assert d.registered_run["model_path"] == "c0-s2"
    assert d.summary[0]["val"]["mean"] == pytest.approx(95.0 / 3)
    assert d.summary[1]["stats"]["precision@50"]["mean"] == pytest.approx(36.0)   # test still reported
    assert d.order[0]["candidate"] == 0 and d.test["n"] == 2


def test_decision_rules():
    assert choose_winner([1.0, 3.0, 3.0], "max") == 1          # ties: the higher-ranked candidate
    assert choose_winner([5.0, 3.0, 4.0], "min") == 1
    assert typical_seed({0: 1.0, 1: 2.0, 2: 3.0}) == 1
    assert typical_seed({0: 1.0, 1: 3.0}) == 0                 # equidistant: the lower seed


def test_ranked_configuration_keeps_its_best_round_as_budget():
    space = _space()
    trials = [TrialRecord(trial_id="t1", status="TERMINATED", outcome="completed", best=30.0, best_round=4,
                          rounds=20, config={"alpha": 0.1}),
              TrialRecord(trial_id="t2", status="TERMINATED", outcome="early-stopped", best=35.0, best_round=2,
                          rounds=5, config={"alpha": 0.2})]
    ranked = rank_configs(trials, space)
    assert [(c["trial_id"], c["round"]) for c in ranked] == [("t2", 2), ("t1", 4)]


def test_statistics_helpers():
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["std"] == 1.0 and s["ci95_low"] < 2.0 < s["ci95_high"]
    a = {i: float(i) for i in range(10)}
    b = {i: float(i) + 1.0 + 0.01 * i for i in range(10)}
    t = paired_test(a, b)
    assert t["significant"] and t["p_value"] < 0.05
    same = paired_test(a, dict(a))
    assert not same["significant"] and same["p_value"] == 1.0


def test_sweep_select_promote_serve(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--trials", "3", "--name", "e2e", "--set", "em_iterations=5",
                 "--set", "updates_per_step=10", "--progress-every", "0"]) == 0
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


def test_ridge_sweep_selects_and_promotes(home, ray_cluster, capfd, monkeypatch):
    def z(*args):
        return cli(home, *args, capfd=capfd, monkeypatch=monkeypatch)
    assert z("search", "ridge", "--trials", "2", "--name", "rs").returncode == 0
    res = z("select", "rs", "--k", "1", "--seeds", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "registered zsexp-ridge-synthetic-tiny version 1" in res.stdout
    res = z("promote", "zsexp-ridge-synthetic-tiny")
    assert res.returncode == 0 and "is now @champion" in res.stdout, res.stderr

