"""The papers' metrics, vectorised in torch, device-agnostic, chunked, all in percent.

Retrieval (ZSCRGAN §4.2), per query q over a ranked gallery:
  Precision@k(q) = (# relevant among the top k) / k
  AveP_k(q) = (sum over ranks r <= k holding a relevant item of Precision@r(q)) / (# such ranks),
              0 when the top k holds no relevant item;  mAP@k = mean_q AveP_k(q)
  AveP(q) over the full ranking = (sum over every rank r holding a relevant item of Precision@r(q))
              / (# relevant items in the gallery);  mAP = mean_q AveP(q)  (reported as ``map``)
  Top-1 = share of queries whose first result is relevant.
Zero-shot classification (CM-GAN §4.2), per image with the rank FR of its correct class:
  Flat-Hit@k = share of images with FR <= k;  MFR = 100 / (K |images|) * sum FR   (eq. 7)
  where K is the number of candidates (unseen classes for ZSL, seen + unseen for GZSL).

Ties are broken *against* the correct answer (a relevant gallery item sorts after non-relevant
items of equal score; the correct class ranks after every other class of equal score), so a
degenerate model that scores everything alike cannot look good.  NaN scores are an error: a
diverged model must fail loudly, not be ranked.

Memory: both metric functions process queries/images in chunks so that no more than about
``max_elements`` scores (plus sort buffers) are alive at once; the ``*_from_embeddings``
variants never build the full score matrix, so 20K classes x 1M images fits on one machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_MAX_ELEMENTS = 1 << 24  # ~16M scores (64 MB float32) per chunk


def _rows_per_chunk(n_cols: int, max_elements: int) -> int:
    return max(1, max_elements // max(1, n_cols))


def _check_scores(scores: torch.Tensor, what: str) -> None:
    if torch.isnan(scores).any():
        raise ValueError(f"{what}: scores contain NaN (did the model diverge?)")


# --------------------------------------------------------------------------- retrieval
def _rank_gallery(scores: torch.Tensor, relevant: torch.Tensor, k: int) -> torch.Tensor:
    """Relevance [Q, k'] of the top k' = min(k, N) items, ties pessimistic (see module doc)."""
    # stable two-key sort: first non-relevant before relevant, then by score descending
    pre = torch.argsort(relevant.to(torch.int8), dim=1, stable=True)
    s = torch.gather(scores, 1, pre)
    order = torch.argsort(s, dim=1, descending=True, stable=True)
    top = torch.gather(pre, 1, order[:, :k])
    return torch.gather(relevant, 1, top)


def retrieval_per_query(scores: torch.Tensor, relevant: torch.Tensor, k: int = 50,
                        max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, torch.Tensor]:
    """Per-query Precision@k, AveP@k, AveP over the full ranking and top-1 hit (percent), each [Q]."""
    scores = torch.as_tensor(scores)
    relevant = torch.as_tensor(relevant, device=scores.device).bool()
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise ValueError(f"retrieval metrics: scores [Q, N] and relevant [Q, N] must agree, got "
                         f"{tuple(scores.shape)} and {tuple(relevant.shape)}")
    if k < 1:
        raise ValueError(f"retrieval metrics: k must be >= 1, got {k}")
    _check_scores(scores, "retrieval metrics")
    out = {"precision": [], "ap": [], "ap_full": [], "top1": []}
    step = _rows_per_chunk(scores.shape[1], max_elements)
    for start in range(0, scores.shape[0], step):
        full = _rank_gallery(scores[start:start + step].float(), relevant[start:start + step],
                             scores.shape[1]).float()
        ranks = torch.arange(1, full.shape[1] + 1, device=full.device, dtype=torch.float32)
        prec_at_r = full.cumsum(dim=1) / ranks
        rel = full[:, :k]
        n_rel = rel.sum(dim=1)
        out["precision"].append(100.0 * n_rel / k)
        ap = (prec_at_r[:, :k] * rel).sum(dim=1) / n_rel.clamp_min(1.0)
        out["ap"].append(100.0 * ap)
        out["ap_full"].append(100.0 * (prec_at_r * full).sum(dim=1) / full.sum(dim=1).clamp_min(1.0))
        out["top1"].append(100.0 * rel[:, 0])
    return {key: torch.cat(val) for key, val in out.items()}


def retrieval_metrics(scores: torch.Tensor, relevant: torch.Tensor, k: int = 50,
                      max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, float]:
    """``scores`` [Q, N] (higher = better), ``relevant`` bool [Q, N] -> precision@k, map@k, top1 (%)."""
    return _retrieval_means(retrieval_per_query(scores, relevant, k, max_elements), k)


def _retrieval_means(per: dict[str, torch.Tensor], k: int) -> dict[str, float]:
    return {f"precision@{k}": float(per["precision"].mean()), f"map@{k}": float(per["ap"].mean()),
            "map": float(per["ap_full"].mean()), "top1": float(per["top1"].mean())}


def cosine_scores(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(queries.float(), dim=1)
    g = torch.nn.functional.normalize(gallery.float(), dim=1)
    return q @ g.T


def retrieval_per_query_from_embeddings(queries: torch.Tensor, query_labels: torch.Tensor,
                                        gallery: torch.Tensor, gallery_labels: torch.Tensor, k: int = 50,
                                        max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, torch.Tensor]:
    """Cosine retrieval without the full [Q, N] matrix: relevant = same label."""
    gallery_labels = gallery_labels.to(gallery.device)
    query_labels = query_labels.to(gallery.device)
    parts: dict[str, list[torch.Tensor]] = {"precision": [], "ap": [], "ap_full": [], "top1": []}
    step = _rows_per_chunk(gallery.shape[0], max_elements)
    for start in range(0, queries.shape[0], step):
        s = cosine_scores(queries[start:start + step], gallery)
        rel = query_labels[start:start + step, None] == gallery_labels[None, :]
        for key, val in retrieval_per_query(s, rel, k, max_elements).items():
            parts[key].append(val)
    return {key: torch.cat(val) for key, val in parts.items()}


# --------------------------------------------------------------------------- zero-shot classification
def zsl_ranks(scores: torch.Tensor, labels: torch.Tensor,
              max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """1-based rank of the correct candidate per image (ties pessimistic), int64 [N]."""
    scores = torch.as_tensor(scores)
    labels = torch.as_tensor(labels, device=scores.device).long()
    if scores.ndim != 2 or labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"zsl metrics: scores [N, K] and labels [N] must agree, got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"zsl metrics: labels must index the K={scores.shape[1]} candidates")
    _check_scores(scores, "zsl metrics")
    out = []
    step = _rows_per_chunk(scores.shape[1], max_elements)
    for start in range(0, scores.shape[0], step):
        s = scores[start:start + step]
        lab = labels[start:start + step]
        correct = s.gather(1, lab[:, None])
        # every *other* candidate scoring >= the correct one ranks before it
        out.append(1 + (s >= correct).sum(dim=1) - 1)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def zsl_metrics_from_ranks(ranks: torch.Tensor, n_candidates: int,
                           ks: Sequence[int] = (1, 2, 5, 10, 20)) -> dict[str, float]:
    ranks = ranks.float()
    res = {f"fh@{k}": float(100.0 * (ranks <= k).float().mean()) for k in ks}
    res["mfr"] = float(100.0 / (n_candidates * ranks.numel()) * ranks.sum())   # eq. 7
    return res


def zsl_metrics(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 2, 5, 10, 20),
                max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, float]:
    """``scores`` [N_images, K_candidates], ``labels`` [N_images] -> fh@k for k in ks, and mfr (%)."""
    scores = torch.as_tensor(scores)
    return zsl_metrics_from_ranks(zsl_ranks(scores, labels, max_elements), scores.shape[1], ks)


def zsl_ranks_from_embeddings(images: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor,
                              max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """Cosine ranks without the full [N, K] matrix (ImageNet: 1M images x 20K classes)."""
    labels = labels.to(candidates.device)
    out = []
    step = _rows_per_chunk(candidates.shape[0], max_elements)
    for start in range(0, images.shape[0], step):
        s = cosine_scores(images[start:start + step].to(candidates.device), candidates)
        out.append(zsl_ranks(s, labels[start:start + step], max_elements))
    return torch.cat(out)


def degenerate_rows(x: torch.Tensor) -> int:
    """Rows with (numerically) zero norm: cosine similarity is undefined for them, every candidate ties,
    and the pessimistic tie rule scores them 0 -- a dead-ReLU embedding, reported, never hidden."""
    return int((x.float().norm(dim=1) <= 1e-12).sum())


def retrieval_evaluation(queries: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                         gallery_labels: torch.Tensor, k: int, per_query: bool = False) -> dict:
    """The one retrieval evaluation of every model (ZSCRGAN Alg. 2 scoring, ridge): cosine ranking of the
    gallery per query; P@k, mAP@k, mAP over the full ranking, top-1 (%), and the counts of degenerate
    (all-zero) query and gallery embeddings."""
    per = retrieval_per_query_from_embeddings(queries, query_labels, gallery, gallery_labels, k=k)
    res: dict = {**_retrieval_means(per, k),
                 "degenerate_queries": degenerate_rows(queries), "degenerate_images": degenerate_rows(gallery)}
    if per_query:
        res["per_query"] = {key: v.cpu().tolist() for key, v in per.items()}
        res["query_classes"] = query_labels.tolist()
    return res


def retrieval_chance(gallery_labels: torch.Tensor | Sequence[int], query_labels: torch.Tensor | Sequence[int],
                     k: int) -> dict[str, float]:
    """Expected P@k and Top-1 of a uniformly random ranking: per query, the share of relevant gallery
    items (mean over queries; k no larger than the gallery).  (Expected AP has no such closed form;
    P@k is the figure a reader compares.)"""
    g = torch.as_tensor(gallery_labels).cpu()
    q = torch.as_tensor(query_labels).cpu()
    share = float(100.0 * (q[:, None] == g[None, :]).float().mean(dim=1).mean())
    return {f"precision@{k}": share, "top1": share}


def zsl_chance(n_candidates: int, ks: Sequence[int]) -> dict[str, float]:
    """Expected Flat-Hit@k and MFR (eq. 7) of a uniformly random ranking of K candidates:
    FH@k = min(k, K) / K, E[FR] = (K + 1) / 2, so MFR = 100 (K + 1) / (2K)."""
    res = {f"fh@{k}": 100.0 * min(k, n_candidates) / n_candidates for k in ks}
    res["mfr"] = 100.0 * (n_candidates + 1) / (2.0 * n_candidates)
    return res
