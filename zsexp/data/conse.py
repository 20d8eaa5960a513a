"""CONSE image representations (CM-GAN eq. 1; Norouzi et al., "Convex Combination of Semantic Embeddings").

``V0(v) = sum_{i in T_K} p(i | i in T_K) T0(l_i)``: the convex combination of the label embeddings
of the K most probable seen classes, weighted by the renormalised probabilities.

The probabilities come from a classifier trained on *seen* classes only, as CONSE's CNN is.
Datasets that ship such probabilities (``seen_probs``) use them, restricted to the requested
seen classes; otherwise (xlsa17 features, user ``.npz`` without probabilities) a softmax
classifier (multinomial logistic regression on standardised features, L-BFGS) is fitted on the
training images of the seen classes.  The restriction matters during tuning: with ``val``
classes playing unseen, the classifier must know only ``train`` classes.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError


def conse(probs: torch.Tensor, label_emb: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 1. ``probs`` [N, S] over seen classes, ``label_emb`` [S, D] -> [N, D]."""
    if probs.ndim != 2 or label_emb.ndim != 2 or probs.shape[1] != label_emb.shape[0]:
        raise ZsexpError(f"conse: probs [N, S] and label_emb [S, D] disagree: {tuple(probs.shape)} vs "
                         f"{tuple(label_emb.shape)}")
    if not 1 <= k <= probs.shape[1]:
        raise ZsexpError(f"conse: top-K must satisfy 1 <= K <= S={probs.shape[1]}, got K={k}")
    top_p, top_i = probs.topk(k, dim=1)                       # T_K, p(i) for i in T_K
    weights = top_p / top_p.sum(dim=1, keepdim=True).clamp_min(1e-12)   # p(i | i in T_K)
    return torch.einsum("nk,nkd->nd", weights, label_emb[top_i])


def fit_softmax_classifier(x: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0,
                           weight_decay: float = 1e-4, max_iter: int = 100) -> tuple[np.ndarray, callable]:
    """Multinomial logistic regression; returns (train accuracy, predict_proba)."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-6)
    xt = (xt - mean) / std
    yt = torch.as_tensor(y, dtype=torch.int64)
    w = (0.01 * torch.randn(xt.shape[1], n_classes, generator=gen)).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()

    def predict_proba(features: np.ndarray) -> np.ndarray:
        f = (torch.as_tensor(features, dtype=torch.float32) - mean) / std
        return torch.softmax(f @ w + b, dim=1).numpy()

    acc = float((predict_proba(x).argmax(1) == y).mean())
    return acc, predict_proba


def seen_class_probabilities(data: ZSLData, seen_classes: np.ndarray, seed: int = 0,
                             exclude: np.ndarray | None = None, use_shipped: bool = True) -> np.ndarray:
    """Per-image probabilities [N, len(seen_classes)] over ``seen_classes`` (columns in that order).

    ``use_shipped``: take the dataset's ``seen_probs`` when they cover ``seen_classes``; a warning says
    that zsexp cannot tell which images trained them when ``exclude`` asks for images held out.
    Otherwise a classifier is fitted on the seen classes' images, minus the GZSL images and ``exclude``.
    """
    seen_classes = np.asarray(seen_classes, dtype=np.int64)
    if use_shipped and data.seen_probs is not None and np.isin(seen_classes, data.prob_classes).all():
        if exclude is not None and len(exclude):
            warnings.warn(f"{data.name}: using the dataset's seen_probs; the dataset does not say which images "
                          f"trained that classifier, so images held out for validation may have trained it "
                          f"(set conse_probs=fit to fit one here)", stacklevel=2)
        col = {c: j for j, c in enumerate(data.prob_classes.tolist())}
        probs = data.seen_probs[:, [col[c] for c in seen_classes.tolist()]]
        return probs / np.clip(probs.sum(1, keepdims=True), 1e-12, None)
    # fit on the seen classes' training images (never the held-out GZSL images nor `exclude`)
    held = np.zeros(data.n_images, bool)
    held[data.test_seen_images] = True
    if exclude is not None:
        held[np.asarray(exclude, dtype=np.int64)] = True
    fit = np.flatnonzero(np.isin(data.labels, seen_classes) & ~held)
    index = {c: j for j, c in enumerate(seen_classes.tolist())}
    y = np.array([index[c] for c in data.labels[fit].tolist()], dtype=np.int64)
    _, predict = fit_softmax_classifier(data.features[fit], y, len(seen_classes), seed=seed)
    return predict(data.features)


def conse_image_representations(data: ZSLData, seen_classes: np.ndarray, k: int, seed: int = 0,
                                exclude: np.ndarray | None = None, use_shipped: bool = True) -> np.ndarray:
    """V0 for every image of ``data``: [N, Dt] float32, in the class-embedding (text) space."""
    probs = torch.as_tensor(seen_class_probabilities(data, seen_classes, seed=seed, exclude=exclude,
                                                     use_shipped=use_shipped), dtype=torch.float32)
    emb = torch.as_tensor(data.class_embeddings[np.asarray(seen_classes)], dtype=torch.float32)
    return conse(probs, emb, k).numpy()
