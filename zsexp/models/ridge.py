"""Closed-form linear baselines: the simplest honest reference for each task, trained and evaluated
exactly like the GANs (same splits, same queries, same metrics, same checkpoints and sweeps).

* ``ridge`` (the retrieval task of ZSCRGAN): a linear map W from text to image space, fitted on the
  fit split's (text, image) pairs -- per-image captions when the data has them and
  ``text_source=captions``, else each image's class text (which is a count-weighted fit to the class-mean
  images).  A query text t is mapped to ``t W + b`` and the split's images are ranked by cosine
  similarity, scored with the metrics of ZSCRGAN §4.2 (P@K, mAP@K, top-1, mAP over the full ranking).
* ``ridge-zsl`` (the zero-shot classification task of CM-GAN): a linear map from image features to the
  class-embedding space, fitted on the fit split's images and their class embeddings; an image ranks the
  candidate classes by cosine similarity between its mapped features and their embeddings, scored with
  CM-GAN's Flat-Hit@k and MFR (§4.2, eq. 7), ZSL (unseen candidates) and GZSL (seen + unseen).

Scoring is cosine similarity in the target space *centred on the fit targets' mean* (``centre=true``,
the default; ``false`` scores raw vectors).  A ridge prediction is the target mean plus a shrunk
class-specific part; with non-negative image features the shared mean dominates raw cosines, so every
query looks alike.  Centring both sides (an affine change the GANs learn for themselves in the CSEM /
maps) measured +1 to +9 P@50 on the built-in data at the same lam.

The fit (the one "round"): minimise ``mean_n ||x_n W + b - y_n||^2 + lam ||W||_F^2`` with an
unpenalised bias, solved in float64 through the smaller of the primal and dual normal equations.  The
penalty is per fitted pair (the mean, not the sum), so one ``lam`` means the same on data of any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zsexp.config import param
from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.metrics import retrieval_chance, retrieval_evaluation
from zsexp.models.base import Trainer
from zsexp.models.common import check_eval_split, zsl_candidates, zsl_chance_of, zsl_evaluation
from zsexp.models.zscrgan import pool_queries, query_inputs


def fit_ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """W [Dx, Dy], b [Dy] minimising mean ||x W + b - y||^2 + lam ||W||^2 (bias not penalised)."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    if n == 0:
        raise ZsexpError("ridge: nothing to fit (no training pairs)")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    if x.shape[1] <= n:              # primal: (X'X/n + lam I) W = X'Y/n
        a = xc.T @ xc / n + lam * torch.eye(x.shape[1], dtype=x.dtype)
        w = torch.linalg.solve(a, xc.T @ yc / n)
    else:                            # dual: W = X' (XX'/n + lam I)^-1 Y / n
        a = xc @ xc.T / n + lam * torch.eye(n, dtype=x.dtype)
        w = xc.T @ torch.linalg.solve(a, yc) / n
    b = my - mx @ w
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise ZsexpError(f"ridge: the fit is not finite (lam={lam}); raise `lam`")
    return w.float(), b.float()


@dataclass
class RidgeConfig:
    lam: float = param(1.0, low=1e-8, high=1e8, help="ridge penalty on W per fitted pair (bias unpenalised)")
    text_source: str = param("class", choices=("captions", "class"),
                             help="fit on each image's class text, or on its caption embedding when the data has one")
    centre: bool = param(True, help="score cosines around the fit images' mean (see module doc)")
    query: str = param("class", choices=("class", "captions", "documents"),
                       help="query = class text, pooled captions, or each document (as ZSCRGAN)")
    eval_k: int = param(50, low=1, high=100000, help="K of Precision@K / mAP@K")


@dataclass
class RidgeZSLConfig:
    lam: float = param(1.0, low=1e-8, high=1e8, help="ridge penalty on W per fitted image (bias unpenalised)")
    centre: bool = param(True, help="score cosines around the fit class embeddings' mean (see module doc)")
    ks: list[int] = param([1, 2, 5, 10, 20], low=1, high=100000, help="k of the Flat-Hit@k metrics")


class _ClosedForm(Trainer):
    """Shared plumbing: one round (the fit), state as plain tensors."""

    family = ""

    def __init__(self, cfg: Any, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                 fit_split: str = "train"):
        super().__init__(cfg, data, device, seed, fit_split)
        self.w: torch.Tensor | None = None
        self.b: torch.Tensor | None = None
        self.origin: torch.Tensor | None = None     # the point cosines are measured around
        self.iteration = 0

    def total_rounds(self) -> int:
        return 1

    def train_round(self) -> dict[str, float]:
        x, y = self._pairs()
        self.w, self.b = fit_ridge(x, y, self.cfg.lam)
        self.origin = y.mean(0) if self.cfg.centre else torch.zeros(y.shape[1])
        self.iteration = 1
        resid = (x @ self.w + self.b - y).pow(2).sum(1).mean()
        return {"loss_fit": float(resid), "pairs": float(x.shape[0])}

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if self.w is None:
            raise ZsexpError(f"{self.family}: evaluate() before the fit (train one round first)")
        return x.float().cpu() @ self.w + self.b - self.origin

    def _target(self, y: np.ndarray) -> torch.Tensor:
        """Gallery images / candidate class embeddings, in the same (centred) coordinates."""
        return torch.as_tensor(y).float() - self.origin

    def state_dict(self) -> dict[str, Any]:
        return {**self.state_header(),
                "iteration": self.iteration, "w": self.w, "b": self.b, "origin": self.origin}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_state(state)
        self.w, self.b, self.origin = state["w"], state["b"], state["origin"]
        self.iteration = int(state["iteration"])


class RidgeRetrieval(_ClosedForm):
    """Text -> image ridge map, cosine ranking of the split's images (the ZSCRGAN task's baseline)."""

    family = "ridge"

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.data.images(self.fit_split)
        if self.cfg.text_source == "captions" and self.data.text_features is not None:
            text = self.data.text_features[idx]
        else:
            text = self.data.class_embeddings[self.data.labels[idx]]
        return torch.as_tensor(text), torch.as_tensor(self.data.features[idx])

    def evaluate(self, split: str = "val", per_query: bool = False) -> dict[str, Any]:
        check_eval_split(split, self.fit_split)
        phi, labels, pool = query_inputs(self.data, split, self.cfg.query)
        theta, labels = pool_queries(self._map(phi), labels, self.data.classes(split), pool)
        idx = self.data.images(split)
        return retrieval_evaluation(theta, labels, self._target(self.data.features[idx]),
                                    torch.as_tensor(self.data.labels[idx]), k=self.cfg.eval_k, per_query=per_query)

    def chance(self, split: str = "val") -> dict[str, float]:
        _, labels, pool = query_inputs(self.data, split, self.cfg.query)
        q = self.data.classes(split) if pool else labels
        return retrieval_chance(self.data.labels[self.data.images(split)], q, self.cfg.eval_k)


class RidgeZSL(_ClosedForm):
    """Image -> class-embedding ridge map, cosine ranking of candidate classes (the CM-GAN task's baseline)."""

    family = "ridge-zsl"

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.data.images(self.fit_split)
        return (torch.as_tensor(self.data.features[idx]),
                torch.as_tensor(self.data.class_embeddings[self.data.labels[idx]]))

    def evaluate(self, split: str = "val", per_image: bool = False) -> dict[str, Any]:
        cands = zsl_candidates(self.data, split, self.fit_split, self.family)      # as CM-GAN's evaluate()
        imgs = self.data.images(split)
        v = self._map(torch.as_tensor(self.data.features[imgs]))
        return zsl_evaluation(v, self.data.labels[imgs], cands,
                              lambda c: self._target(self.data.class_embeddings[c]), self.cfg.ks, per_image)

    def chance(self, split: str = "val") -> dict[str, float]:
        return zsl_chance_of(zsl_candidates(self.data, split, self.fit_split, self.family), self.cfg.ks)
