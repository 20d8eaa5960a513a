"""Metrics against brute force and hand cases; chance formulas; full-ranking mAP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zsexp.metrics import (
    retrieval_chance,
    retrieval_evaluation,
    retrieval_metrics,
    retrieval_per_query_from_embeddings,
    zsl_chance,
    zsl_metrics,
    zsl_ranks_from_embeddings,
)


def brute_retrieval(scores: np.ndarray, relevant: np.ndarray, k: int) -> dict:
    precs, aps, top1 = [], [], []
    for s, rel in zip(scores, relevant, strict=True):
        # pessimistic ties: among equal scores non-relevant first
        order = sorted(range(len(s)), key=lambda j: (-s[j], bool(rel[j])))[:k]
        hits, ap_terms = 0, []
        for r, j in enumerate(order, start=1):
            if rel[j]:
                hits += 1
                ap_terms.append(hits / r)   # Precision@r at a relevant rank
        precs.append(hits / k)
        aps.append(sum(ap_terms) / len(ap_terms) if ap_terms else 0.0)
        top1.append(1.0 if rel[order[0]] else 0.0)
    return {f"precision@{k}": 100 * np.mean(precs), f"map@{k}": 100 * np.mean(aps), "top1": 100 * np.mean(top1)}


def brute_zsl(scores: np.ndarray, labels: np.ndarray, ks) -> dict:
    ranks = []
    for s, y in zip(scores, labels, strict=True):
        ranks.append(1 + sum(1 for j in range(len(s)) if j != y and s[j] >= s[y]))
    ranks = np.array(ranks)
    out = {f"fh@{k}": 100 * np.mean(ranks <= k) for k in ks}
    out["mfr"] = 100.0 / (scores.shape[1] * len(ranks)) * ranks.sum()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 50])
def test_retrieval_matches_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    q, n = 7, 80
    scores = rng.standard_normal((q, n)).astype(np.float32)
    relevant = rng.random((q, n)) < 0.2
    relevant[0] = False  # a query with nothing relevant: AveP = 0
    got = retrieval_metrics(torch.tensor(scores), torch.tensor(relevant), k=k, max_elements=2 * n)
    want = brute_retrieval(scores, relevant, k)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-4), key


def test_retrieval_hand_case():
    # ranking: rel, non, rel, non  -> P@4 = 2/4, AveP = (1/1 + 2/3) / 2, top1 = 1
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    relevant = torch.tensor([[True, False, True, False]])
    m = retrieval_metrics(scores, relevant, k=4)
    assert m["precision@4"] == pytest.approx(50.0)
    assert m["map@4"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert m["top1"] == pytest.approx(100.0)


def test_retrieval_ties_are_pessimistic():
    scores = torch.zeros(1, 4)  # a degenerate model
    relevant = torch.tensor([[True, False, False, False]])
    m = retrieval_metrics(scores, relevant, k=1)
    assert m["top1"] == 0.0 and m["precision@1"] == 0.0


def test_retrieval_rejects_nan_and_shape():
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(torch.tensor([[float("nan"), 1.0]]), torch.tensor([[True, False]]), k=1)
    with pytest.raises(ValueError, match="must agree"):
        retrieval_metrics(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool), k=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_zsl_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, c = 50, 30
    scores = rng.standard_normal((n, c)).astype(np.float32)
    scores[3, :] = 0.0  # all tied: correct class ranks last
    labels = rng.integers(0, c, size=n)
    ks = (1, 2, 5, 10, 20)
    got = zsl_metrics(torch.tensor(scores), torch.tensor(labels), ks=ks, max_elements=3 * c)
    want = brute_zsl(scores, labels, ks)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-4), key


def test_zsl_hand_case_and_random_mfr_is_about_50():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1]])
    labels = torch.tensor([0, 0])         # ranks 1 and 2
    m = zsl_metrics(scores, labels, ks=(1, 2))
    assert m["fh@1"] == pytest.approx(50.0) and m["fh@2"] == pytest.approx(100.0)
    assert m["mfr"] == pytest.approx(100.0 / (3 * 2) * 3)
    gen = torch.Generator().manual_seed(0)
    rnd = zsl_metrics(torch.rand(4000, 100, generator=gen), torch.randint(0, 100, (4000,), generator=gen))
    assert 48 < rnd["mfr"] < 52


def test_embedding_variants_match_full_matrix():
    gen = torch.Generator().manual_seed(3)
    imgs, cands = torch.randn(64, 8, generator=gen), torch.randn(20, 8, generator=gen)
    labels = torch.randint(0, 20, (64,), generator=gen)
    full = torch.nn.functional.normalize(imgs, dim=1) @ torch.nn.functional.normalize(cands, dim=1).T
    ranks = zsl_ranks_from_embeddings(imgs, cands, labels, max_elements=40)
    assert zsl_metrics(full, labels)["mfr"] == pytest.approx(100.0 / (20 * 64) * ranks.sum().item())
    gl = torch.randint(0, 5, (64,), generator=gen)
    ql = torch.arange(5)
    per = retrieval_per_query_from_embeddings(cands[:5], ql, imgs, gl, k=10, max_elements=70)
    rel = ql[:, None] == gl[None, :]
    want = retrieval_metrics(torch.nn.functional.normalize(cands[:5], dim=1)
                             @ torch.nn.functional.normalize(imgs, dim=1).T, rel, k=10)
    assert per["ap"].mean().item() == pytest.approx(want["map@10"], abs=1e-4)


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

