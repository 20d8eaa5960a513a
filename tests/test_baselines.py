"""The reference figures: ridge baselines (closed form, both tasks), chance, full-ranking mAP, per-document
queries, degenerate embeddings, the model help, and the UCI digits as a real two-view set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zsexp.baselines import task_baseline
from zsexp.cli import main
from zsexp.data import load_dataset
from zsexp.errors import ZsexpError
from zsexp.metrics import retrieval_chance, retrieval_evaluation, zsl_chance
from zsexp.models import build_model, dataset_defaults, make_config, size_defaults
from zsexp.models.ridge import fit_ridge

from .test_metrics import brute_retrieval

MFEAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci-mfeat"


def test_fit_ridge_solves_the_normal_equations():
    rng = np.random.default_rng(0)
    for n, dx in ((40, 7), (6, 30)):                       # primal and dual paths
        x, y = rng.normal(size=(n, dx)), rng.normal(size=(n, 5))
        lam = 0.3
        w, b = fit_ridge(torch.as_tensor(x), torch.as_tensor(y), lam)
        xa = np.hstack([x, np.ones((n, 1))])                 # brute force: augmented, unpenalised bias
        pen = np.diag([lam * n] * dx + [0.0])
        sol = np.linalg.solve(xa.T @ xa + pen, xa.T @ y)
        assert np.allclose(w.numpy(), sol[:-1], atol=1e-4) and np.allclose(b.numpy(), sol[-1], atol=1e-4)
    with pytest.raises(ZsexpError, match="nothing to fit"):
        fit_ridge(torch.zeros(0, 3), torch.zeros(0, 2), 1.0)


def test_chance_formulas():
    # 3 queries of classes 0, 1, 1 against 10 images: 2 of class 0, 8 of class 1 -> (0.2 + 0.8 + 0.8) / 3
    assert retrieval_chance([0, 0] + [1] * 8, [0, 1, 1], 5) == pytest.approx({"precision@5": 60.0, "top1": 60.0})
    ch = zsl_chance(4, [1, 2, 10])
    assert ch == pytest.approx({"fh@1": 25.0, "fh@2": 50.0, "fh@10": 100.0, "mfr": 62.5})
    # random scores land on chance (many queries)
    g = torch.randint(0, 4, (400,))
    q = torch.arange(4).repeat(50)
    res = retrieval_evaluation(torch.randn(200, 8), q, torch.randn(400, 8), g, k=50)
    assert res["precision@50"] == pytest.approx(retrieval_chance(g, q, 50)["precision@50"], abs=2.5)


def test_full_ranking_map_and_degenerate_rows():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(5, 6)), rng.normal(size=(30, 6))
    ql, gl = np.arange(5) % 3, rng.integers(0, 3, 30)
    res = retrieval_evaluation(torch.as_tensor(q), torch.as_tensor(ql), torch.as_tensor(g), torch.as_tensor(gl), k=10)
    qn, gn = q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)
    full = brute_retrieval(qn @ gn.T, ql[:, None] == gl[None, :], 30)
    assert res["map"] == pytest.approx(full["map@30"], abs=1e-4)
    assert res["degenerate_queries"] == 0 and res["degenerate_images"] == 0
    q[2] = 0.0                                               # a dead embedding ties with everything
    g[[0, 7]] = 0.0
    res = retrieval_evaluation(torch.as_tensor(q), torch.as_tensor(ql), torch.as_tensor(g), torch.as_tensor(gl), k=10)
    assert res["degenerate_queries"] == 1 and res["degenerate_images"] == 2


def test_ridge_models_train_evaluate_and_reload(tiny):
    for family, key in (("ridge", "precision@50"), ("ridge-zsl", "zsl/mfr")):
        cfg = make_config(family, tiny)
        m = build_model(family, cfg, tiny)
        with pytest.raises(ZsexpError, match="before the fit"):
            m.evaluate("val")
        m.train_round()
        res = m.evaluate("test")
        chance = m.chance("test")[key]
        assert (res[key] > chance + 5) if key.startswith("precision") else (res[key] < chance - 5), (family, res)
        again = build_model(family, cfg, tiny)
        again.load_state_dict(m.state_dict())
        assert again.evaluate("test") == pytest.approx(res)
        with pytest.raises(ZsexpError, match=r"fitted on train \+ val"):
            build_model(family, cfg, tiny, fit_split="trainval").evaluate("val")


def test_documents_queries_score_each_text(tiny):
    cfg = make_config("ridge", tiny, ("test", {"query": "documents", "text_source": "captions"}))
    m = build_model("ridge", cfg, tiny)
    m.train_round()
    res = m.evaluate("test", per_query=True)
    n_docs = len(tiny.images("test"))
    assert len(res["per_query"]["precision"]) == n_docs and len(res["query_classes"]) == n_docs
    assert m.chance("test")["precision@50"] == pytest.approx(100 / 6, abs=0.5)


def test_task_baseline_is_tuned_on_validation_only(tiny):
    b = task_baseline("zscrgan", tiny, "train")
    assert b["model"] == "ridge" and b["val"] and "validation" in b["chosen_by"]
    poisoned = load_dataset("synthetic-tiny")           # the choice of lam cannot depend on test features
    import dataclasses

    shuffled = dataclasses.replace(poisoned, features=poisoned.features.copy())
    test_imgs = shuffled.images("test")
    shuffled.features[test_imgs] = np.random.default_rng(0).permutation(shuffled.features[test_imgs])
    assert task_baseline("zscrgan", shuffled, "train")["config"]["lam"] == b["config"]["lam"]
    final = task_baseline("cmgan", tiny, "trainval")
    assert final["model"] == "ridge-zsl" and final["val"] is None and "zsl/fh@5" in final["test"]
    assert task_baseline("ridge", tiny) is None


def test_train_reports_chance_and_baseline(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "zscrgan", "--out", str(out), "--device", "cpu", "--set", "em_iterations=2"]) == 0
    printed = capsys.readouterr().out
    assert "| ridge " in printed and "| chance " in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["chance"]["test"]["precision@50"] == pytest.approx(100 / 6, abs=0.5)
    assert m["baseline"]["model"] == "ridge" and "precision@50" in m["baseline"]["test"]
    assert "degenerate_queries" in m["test"]
    assert main(["evaluate", str(out / "best.pt"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "chance" in printed and "ridge" in printed
    assert main(["train", "ridge", "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["baseline"] is None


def test_train_help_shows_defaults_ranges_and_dataset_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "zscrgan", "--dataset", "synthetic-cub", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "em_schedule        linear" in out and "in [0.0, 100.0]" in out and "eq. 12" in out
    assert "on synthetic-cub: g_hidden=[512, 1024]" in out and "cmgan config keys" not in out


def test_size_defaults_apply_to_small_data_only(tiny):
    import dataclasses

    assert dataset_defaults("zscrgan", tiny) == tiny.defaults["zscrgan"]          # built-in data: its own
    bare = dataclasses.replace(tiny, defaults={})
    small = size_defaults("zscrgan", bare)
    assert small["em_schedule"] == "fixed" and small["updates_per_step"] == 100
    assert make_config("zscrgan", bare).g_hidden == small["g_hidden"]


@pytest.mark.skipif(not MFEAT.is_dir(), reason="shared/data/uci-mfeat not beside this checkout")
def test_uci_digits_splits_and_views():
    a, b = load_dataset(str(MFEAT), seed=0), load_dataset(str(MFEAT), seed=1)
    assert (len(a.train_classes), len(a.val_classes), len(a.test_classes)) == (6, 2, 2)
    assert not set(a.train_classes) & set(a.test_classes) and a.n_images == 2000
    assert not np.array_equal(a.test_classes, b.test_classes) or not np.array_equal(a.val_classes, b.val_classes)
    assert a.image_dim == 240 and a.text_dim == 76 and 0 <= a.features.min() and a.features.max() <= 1
    seen = a.text_features[np.isin(a.labels, a.train_classes)]
    assert abs(seen.mean()) < 0.05                           # z-scored with the training classes' statistics
    kl = load_dataset(f"{MFEAT}:kl-fourier", seed=0)
    assert kl.text_dim == 64 and kl.image_dim == 76 and "kl-fourier" in kl.name
    with pytest.raises(ZsexpError, match="two different views"):
        load_dataset(f"{MFEAT}:pixels-pixels")
    assert size_defaults("zscrgan", a)["updates_per_step"] == 100        # a small real set gets the size rule
    m = build_model("ridge", make_config("ridge", a), a)
    m.train_round()
    assert m.evaluate("test")["precision@50"] > m.chance("test")["precision@50"]
