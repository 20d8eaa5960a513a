"""Retrieval from a trained checkpoint without the dataset: the code behind the registered MLflow model.

``load_retriever(path)`` rebuilds only the networks a query needs from a ``weights_only`` checkpoint:

* ZSCRGAN (Alg. 2): queries are class text embeddings [Q, Dt] -> TE (mu) -> G(z, mu), z from a fixed
  seed, averaged over ``eval_z_samples`` -> CSEM; the gallery is image features [N, Dv] -> CSEM;
  ranking by cosine similarity.
* CM-GAN (§3.4): queries and gallery live in the label-embedding space T0.  ``query_kind`` says
  which side each is: images must be given as their CONSE representation V0 (eq. 1;
  ``zsexp.data.conse_image_representations`` builds it) and are mapped by T̂_K; class-label
  embeddings are mapped by V̂_K; ranking by cosine similarity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zsexp.errors import ZsexpError
from zsexp.models.common import load_checkpoint


class ZSCRGANRetriever:
    def __init__(self, state: dict[str, Any]):
        from zsexp.config import build_config
        from zsexp.models.zscrgan import CSEM, Generator, TextEncoder, ZSCRGANConfig

        m = state["model"]
        self.cfg = build_config(ZSCRGANConfig, ("checkpoint config", m["config"]))
        self.seed = int(m["seed"])
        nets = m["nets"]
        lat = self.cfg.latent_dim
        dt = nets["te"]["fc.weight"].shape[1]
        dv = nets["csem"]["fc.weight"].shape[1]
        self.te = TextEncoder(dt, lat)
        self.te.load_state_dict(nets["te"])
        self.csem = CSEM(dv, lat)
        self.csem.load_state_dict(nets["csem"])
        self.use_triplet = self.cfg.ablation not in ("no_triplet", "no_r_triplet")
        self.g = None
        if "g" in nets:
            self.g = Generator(self.cfg.noise_dim, lat, self.cfg.g_hidden, dv, self.cfg.leak)
            self.g.load_state_dict(nets["g"])
        for net in (self.te, self.csem, self.g):
            if net is not None:
                net.eval()
        self.text_dim, self.image_dim = dt, dv

    def embed_queries(self, phi: torch.Tensor) -> torch.Tensor:
        from zsexp.models.zscrgan import alg2_query_embedding

        return alg2_query_embedding(self.te, self.g, self.csem if self.use_triplet else None, phi,
                                    noise_dim=self.cfg.noise_dim, z_samples=self.cfg.eval_z_samples, seed=self.seed,
                                    sample_c=self.cfg.eval_c == "sample")

    @torch.no_grad()
    def embed_gallery(self, images: torch.Tensor) -> torch.Tensor:
        return self.csem(images) if self.use_triplet else images

    def check(self, queries: np.ndarray, gallery: np.ndarray, query_kind: str) -> None:
        if query_kind not in ("text", "class"):
            raise ZsexpError(f"ZSCRGAN answers text queries; query_kind must be 'text', got {query_kind!r}")
        if queries.shape[1] != self.text_dim or gallery.shape[1] != self.image_dim:
            raise ZsexpError(f"ZSCRGAN expects queries [Q, {self.text_dim}] and gallery [N, {self.image_dim}], "
                             f"got {queries.shape} and {gallery.shape}")


class CMGANRetriever:
    def __init__(self, state: dict[str, Any]):
        from zsexp.config import build_config
        from zsexp.models.cmgan import CMGANConfig, CrossModalMap

        m = state["model"]
        self.cfg = build_config(CMGANConfig, ("checkpoint config", m["config"]))
        res = self.cfg.map_init == "residual"
        self.t_maps, self.v_maps = [], []
        self.dim = None
        for item in m["kept"]:
            dim = item["state"]["fc1.weight"].shape[1]
            self.dim = dim
            net = CrossModalMap(dim, self.cfg.hidden, res)
            net.load_state_dict(item["state"])
            net.eval()
            (self.t_maps if item["side"] == "T" else self.v_maps).append(net)
        if self.dim is None:      # CONSE-only model: no maps, identity in T0
            self.dim = int(state.get("dim", 0)) or None

    @torch.no_grad()
    def _apply(self, x: torch.Tensor, maps: list) -> torch.Tensor:
        for net in maps:           # composition in training order: T̂_K = T_K ∘ ... ∘ T_1
            x = net(x)
        return x

    def embed(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        return self._apply(x, self.t_maps if kind == "image" else self.v_maps)

    def check(self, queries: np.ndarray, gallery: np.ndarray, query_kind: str) -> None:
        if query_kind not in ("image", "class"):
            raise ZsexpError(f"CM-GAN query_kind must be 'image' or 'class', got {query_kind!r}")
        if self.dim and (queries.shape[1] != self.dim or gallery.shape[1] != self.dim):
            raise ZsexpError(f"CM-GAN expects vectors of the label space (dim {self.dim}), got {queries.shape} "
                             f"and {gallery.shape}")


class RidgeRetriever:
    """The retrieval baseline (``ridge``): a text query t maps to ``t W + b``, a gallery image x stays in the
    image space; both are centred on the fit targets' mean (``origin``) before the cosine ranking."""

    def __init__(self, state: dict[str, Any]):
        m = state["model"]
        self.w, self.b, self.origin = m["w"].float(), m["b"].float(), m["origin"].float()
        self.text_dim, self.image_dim = self.w.shape

    @torch.no_grad()
    def embed_queries(self, phi: torch.Tensor) -> torch.Tensor:
        return phi @ self.w + self.b - self.origin

    @torch.no_grad()
    def embed_gallery(self, images: torch.Tensor) -> torch.Tensor:
        return images - self.origin

    def check(self, queries: np.ndarray, gallery: np.ndarray, query_kind: str) -> None:
        if query_kind not in ("text", "class"):
            raise ZsexpError(f"ridge answers text queries; query_kind must be 'text', got {query_kind!r}")
        if queries.shape[1] != self.text_dim or gallery.shape[1] != self.image_dim:
            raise ZsexpError(f"ridge expects queries [Q, {self.text_dim}] and gallery [N, {self.image_dim}], "
                             f"got {queries.shape} and {gallery.shape}")


class RidgeZSLRetriever:
    """The ZSL baseline (``ridge-zsl``): an image x maps to ``x W + b`` in the class-embedding space, a class
    embedding stays there; both centred on ``origin``.  ``query_kind`` says which side the queries are."""

    def __init__(self, state: dict[str, Any]):
        m = state["model"]
        self.w, self.b, self.origin = m["w"].float(), m["b"].float(), m["origin"].float()
        self.image_dim, self.class_dim = self.w.shape

    @torch.no_grad()
    def embed(self, x: torch.Tensor, kind: str) -> torch.Tensor:
        return (x @ self.w + self.b if kind == "image" else x) - self.origin

    def check(self, queries: np.ndarray, gallery: np.ndarray, query_kind: str) -> None:
        if query_kind not in ("image", "class"):
            raise ZsexpError(f"ridge-zsl query_kind must be 'image' or 'class', got {query_kind!r}")
        dims = {"image": self.image_dim, "class": self.class_dim}
        other = "image" if query_kind == "class" else "class"
        if queries.shape[1] != dims[query_kind] or gallery.shape[1] != dims[other]:
            raise ZsexpError(f"ridge-zsl expects {query_kind} queries of dim {dims[query_kind]} and a gallery of "
                             f"{other} vectors of dim {dims[other]}, got {queries.shape} and {gallery.shape}")


def load_retriever(path: str | Path):
    """The retriever of the checkpoint's family (its model spec names the class)."""
    import importlib

    from zsexp.models import MODELS

    state = load_checkpoint(path)
    model = state.get("model") if isinstance(state, dict) else None
    family = model.get("family") if isinstance(model, dict) else None
    if family not in MODELS or not MODELS[family].retriever:
        raise ZsexpError(f"{path}: not a zsexp model checkpoint (family {family!r})")
    module, _, cls = MODELS[family].retriever.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)(state)
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ZsexpError(f"{path}: a damaged {family} checkpoint ({type(exc).__name__}: {exc})") from None


def retrieve(retriever, queries: np.ndarray, gallery: np.ndarray, k: int = 50,
             query_kind: str | None = None) -> dict[str, np.ndarray]:
    """Top-k gallery indices and cosine scores per query: ``{"indices": [Q, k], "scores": [Q, k]}``."""
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    if queries.ndim != 2 or gallery.ndim != 2:
        raise ZsexpError(f"queries and gallery must be 2-D arrays, got {queries.shape} and {gallery.shape}")
    if not (np.isfinite(queries).all() and np.isfinite(gallery).all()):
        raise ZsexpError("queries and gallery must be finite (found NaN/inf)")
    q, g = torch.from_numpy(queries), torch.from_numpy(gallery)
    if hasattr(retriever, "embed_queries"):          # text -> image retrieval (ZSCRGAN, ridge)
        query_kind = query_kind or "text"
        retriever.check(queries, gallery, query_kind)
        tq, tg = retriever.embed_queries(q), retriever.embed_gallery(g)
    else:                                            # one label space, either side as the query (CM-GAN, ridge-zsl)
        query_kind = query_kind or "class"
        retriever.check(queries, gallery, query_kind)
        other = "image" if query_kind == "class" else "class"
        tq, tg = retriever.embed(q, query_kind), retriever.embed(g, other)
    scores = F.normalize(tq, dim=1) @ F.normalize(tg, dim=1).T
    k = min(int(k), gallery.shape[0])
    # stable descending order: ties keep gallery order
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return {"indices": order.numpy().astype(np.int64), "scores": torch.gather(scores, 1, order).numpy()}


# --------------------------------------------------------------------------- MLflow pyfunc
def _python_model_base():
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class ZsexpRetrievalModel(_python_model_base()):
    """``predict({"queries": [Q, D], "gallery": [N, D']}, params={"k": 50, "query_kind": ...})``.

    Logged as *code* (``zsexp/serving_model.py``, MLflow's models-from-code), not as a pickle, and
    its weights load with ``weights_only=True``: loading a registered model runs no stored code.
    """

    # The model is logged with an explicit signature and input example; MLflow's type-hint validation of
    # ``predict`` (and its console warning that there are no hints) is switched off, as MLflow does for
    # its own ChatModel subclasses.
    _skip_type_hint_validation = True

    def load_context(self, context):
        self.retriever = load_retriever(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        params = params or {}
        kind = params.get("query_kind") or None
        return retrieve(self.retriever, model_input["queries"], model_input["gallery"],
                        k=int(params.get("k", 50)), query_kind=kind)


def log_retrieval_model(checkpoint: str | Path, example: dict[str, np.ndarray], k: int, query_kind: str):
    """Log the pyfunc model (signature + input example) into the active MLflow run; returns its model info."""
    import logging
    import warnings

    import mlflow
    from mlflow.models import infer_signature

    retriever = load_retriever(checkpoint)
    out = retrieve(retriever, example["queries"], example["gallery"], k=k, query_kind=query_kind)
    signature = infer_signature(example, out, params={"k": k, "query_kind": query_kind})
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)       # its "validating the example" notes
    with warnings.catch_warnings():     # the model is logged as code with an explicit signature: no type hints
        warnings.filterwarnings("ignore", message=".*type hint.*")
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("serving_model.py")),
            artifacts={"checkpoint": str(checkpoint)}, signature=signature,
            input_example=(example, {"k": k, "query_kind": query_kind}),
            pip_requirements=["zsexp", "torch", "numpy"])
