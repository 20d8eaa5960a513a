"""Model registry: an explicit dict from family name to (model class, config class, objective)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from zsexp.config import build_config
from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.models.cmgan import CMGAN, CMGANConfig
from zsexp.models.ridge import RidgeConfig, RidgeRetrieval, RidgeZSL, RidgeZSLConfig
from zsexp.models.zscrgan import ZSCRGAN, ZSCRGANConfig


@dataclass(frozen=True)
class ModelSpec:
    """What the platform needs to know of a model family; nothing outside ``zsexp.models`` branches on a
    family's name, it asks the spec."""

    model_cls: type
    config_cls: type
    objective: str          # validation metric a sweep optimises by default
    mode: str               # "max" or "min"
    baseline: str | None = None   # the closed-form model of the same task, reported beside this one
    unit: str = "query"     # the unit of per-unit values and paired tests: "query" (retrieval) or "image" (ZSL)
    query_kind: str = "text"      # what the served model's queries are by default ("text" or "class")
    gallery: str = "features"     # its gallery: image "features", or "conse" representations (CM-GAN eq. 1)
    extra_validation: tuple[str, str] | None = None   # (name, model method) of the paper's own validation measure
    retriever: str = ""     # the serving class (``zsexp.serving``) that answers queries from a checkpoint
    objectives: tuple[str, ...] = ()     # validation metrics a sweep may optimise
    counts_updates: bool = False         # reports optimiser updates per round (ASHA's `unit: updates`)
    # searched key -> (another key, values of it under which the searched key cannot change training, why)
    inert_when: dict[str, tuple[str, tuple[Any, ...], str]] = field(default_factory=dict)

    def rounds(self, model: Any) -> int:
        """Rounds of a full training run (E-M iterations, or step slices)."""
        if isinstance(model, ZSCRGAN):
            return model.cfg.em_iterations
        return model.total_rounds()

    def validation_extras(self, model: Any) -> dict[str, float]:
        """Validation measures beside the metrics (CM-GAN: L_sup on held-out pairs, §4.4) as ``val_<name>``."""
        if self.extra_validation is None:
            return {}
        name, method = self.extra_validation
        return {name: float(getattr(model, method)())}

    def evaluate_units(self, model: Any, data: ZSLData, split: str) -> dict[str, Any]:
        """The split's metrics with each query's (retrieval) or image's (ZSL) values beside them."""
        if self.unit == "query":
            return model.evaluate(split, per_query=True)
        res = model.evaluate(split, per_image=True)
        res["image_labels"] = data.labels[data.images(split)].tolist()
        return res


_SERVE = "zsexp.serving:"
RETRIEVAL_OBJECTIVES = ("precision@50", "map@50", "map", "top1")                  # ZSCRGAN §4.2
ZSL_OBJECTIVES = tuple(f"{s}/{m}" for s in ("zsl", "gzsl")                        # CM-GAN §4.2
                       for m in ("mfr", "fh@1", "fh@2", "fh@5", "fh@10", "fh@20"))
ZSCRGAN_INERT = {
    "lam": ("r_form", ("linear",), "with r_form=linear, lambda only adds a constant to R (eq. 15), so no gradient "
            "changes; search it with r_form: hinge, where lambda is a margin"),
    "updates_per_step": ("em_schedule", ("linear",), "em_schedule=linear runs `it` updates in iteration it "
                         "(Alg. 1); updates_per_step acts only with em_schedule: fixed"),
    "beta": ("ablation", ("no_r", "no_r_triplet"), "these ablations drop R"),
    "lr_csem": ("ablation", ("no_triplet", "no_r_triplet"), "these ablations train no CSEM"),
}
CMGAN_INERT = {"lambda_c": ("ablation", ("conse", "sup", "cycle", "gan"), "this ablation has no weighted cycle term")}
MODELS: dict[str, ModelSpec] = {
    "zscrgan": ModelSpec(ZSCRGAN, ZSCRGANConfig, objective="precision@50", mode="max", baseline="ridge",
                         retriever=_SERVE + "ZSCRGANRetriever", objectives=RETRIEVAL_OBJECTIVES, counts_updates=True,
                         inert_when=ZSCRGAN_INERT),
    "cmgan": ModelSpec(CMGAN, CMGANConfig, objective="zsl/mfr", mode="min", baseline="ridge-zsl", unit="image",
                       query_kind="class", gallery="conse", extra_validation=("val_lsup", "validation_measure"),
                       retriever=_SERVE + "CMGANRetriever", objectives=(*ZSL_OBJECTIVES, "val_lsup"),
                       counts_updates=True, inert_when=CMGAN_INERT),
    "ridge": ModelSpec(RidgeRetrieval, RidgeConfig, objective="precision@50", mode="max",          # retrieval
                       retriever=_SERVE + "RidgeRetriever", objectives=RETRIEVAL_OBJECTIVES),
    "ridge-zsl": ModelSpec(RidgeZSL, RidgeZSLConfig, objective="zsl/mfr", mode="min", unit="image",  # ZSL
                           query_kind="class", retriever=_SERVE + "RidgeZSLRetriever", objectives=ZSL_OBJECTIVES),
}


def get_spec(family: str) -> ModelSpec:
    if family not in MODELS:
        raise ZsexpError(f"unknown model {family!r}; choose one of {', '.join(MODELS)}")
    return MODELS[family]


SMALL_DATA_IMAGES = 20_000
SMALL_DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "zscrgan": {"g_hidden": [256, 512], "d_hidden": 256, "latent_dim": 64, "noise_dim": 32,
                "em_schedule": "fixed", "updates_per_step": 100, "em_iterations": 20},
    "cmgan": {"hidden": 256, "d_hidden": 256, "iters_per_step": 1000},
}


def size_defaults(family: str, data: ZSLData) -> dict[str, Any]:
    """Size rule for data without built-in defaults: under 20,000 training images, narrow widths, budget in updates.

    The paper's widths (ZSCRGAN G 2048-4096, latent 1024; CM-GAN 500) were set for CUB/Flowers/ImageNet
    feature sets of 10^4-10^6 images.  On a few thousand images, with ZSCRGAN's linear E-M schedule
    (Alg. 1: 1 + 2 + ... updates, 465 in 30 iterations), they train poorly: on 5 class splits of the UCI
    digits (`benchmarks/vs_baselines.py --data ../shared/data/uci-mfeat`, docs/science.md "Training budgets") the
    paper defaults score 60.2 test P@50 (chance 50, ridge 73.6) and this rule 68.6, at a sixth of the
    time; the split-to-split spread is larger than that gap.  So a dataset with fewer training
    images gets :data:`SMALL_DATA_DEFAULTS` (ZSCRGAN: G [256, 512], D 256, latent 64, noise 32, a fixed
    schedule of 100 updates x 20 iterations; CM-GAN: widths 256, 1,000 iterations per step); larger
    data keeps the paper's values.  With fewer than 10 seen classes CM-GAN's ``conse_k`` (CONSE's T,
    eq. 1) becomes the number of seen classes.  Built-in synthetic sets carry their own (``ZSLData.defaults``)."""
    out: dict[str, Any] = {}
    if family in SMALL_DATA_DEFAULTS and len(data.images("train")) < SMALL_DATA_IMAGES:
        out.update(SMALL_DATA_DEFAULTS[family])
    n_seen = len(data.train_classes)
    if family == "cmgan" and n_seen < 10:      # CONSE's top-T (eq. 1, paper T = 10) cannot exceed the seen classes
        out["conse_k"] = n_seen
    return out


def dataset_defaults(family: str, data: ZSLData) -> dict[str, Any]:
    """The defaults ``data`` gives ``family`` between the paper's and the user's: its own, else the size rule."""
    return dict(data.defaults.get(family) or size_defaults(family, data))


def make_config(family: str, data: ZSLData, *overrides: tuple[str, Any]) -> Any:
    """Paper defaults, then the dataset's size-appropriate defaults, then each override in order."""
    spec = get_spec(family)
    return build_config(spec.config_cls, (f"dataset {data.name} defaults", dataset_defaults(family, data)),
                        *overrides)


def require_discriminative_validation(data: ZSLData) -> None:
    """Refuse a split whose validation objective cannot tell two models apart.

    With one validation class every ranking is perfect (P@50 = 100, every image's true class at rank 1):
    best-round selection and any sweep on such a split would be silently meaningless."""
    n = len(data.val_classes)
    if n < 2:
        raise ZsexpError(f"{data.name}: the validation split has {n} class(es) "
                         f"({', '.join(map(str, data.val_classes.tolist()))}); with a single validation class "
                         f"every ranking is perfect, so the validation objective cannot compare models; "
                         f"give `val_classes` at least 2 classes")


def train_rounds(model: Any, first: int, last: int,
                 before: Callable[[int], None] | None = None) -> Iterator[tuple[int, dict[str, float], float]]:
    """The one round loop of ``zsexp train``, a sweep trial and a selection run.

    Yields ``(round, losses, seconds)`` for rounds ``first..last``, a round being one
    ``model.train_round()``: an E-M iteration of ZSCRGAN (Alg. 1), a slice of an alternating step of
    CM-GAN (§3.4), or a baseline's closed-form fit.  The loop ends after a round in which the model's own
    stopping rule fired (``model.done``: CM-GAN stops when step k+1 does not improve validation L_sup,
    §4.4).  ``before(round)`` runs before each round (fault injection)."""
    for r in range(first, last + 1):
        if before is not None:
            before(r)
        t0 = time.perf_counter()
        losses = model.train_round()
        yield r, losses, time.perf_counter() - t0
        if getattr(model, "done", False):
            return


def build_model(family: str, cfg: Any, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                fit_split: str = "train") -> Any:
    return get_spec(family).model_cls(cfg, data, device=device, seed=seed, fit_split=fit_split)
