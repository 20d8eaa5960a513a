"""The ridge baselines: closed form against the normal equations, both tasks, reload, per-document queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsexp.errors import ZsexpError
from zsexp.models import build_model, make_config
from zsexp.models.ridge import fit_ridge


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

