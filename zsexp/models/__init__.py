"""Model registry: an explicit dict from family name to (model class, config class, objective)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zsexp.config import build_config
from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.models.cmgan import CMGAN, CMGANConfig
from zsexp.models.zscrgan import ZSCRGAN, ZSCRGANConfig


@dataclass(frozen=True)
class ModelSpec:
    model_cls: type
    config_cls: type
    objective: str          # validation metric a sweep optimises by default
    mode: str               # "max" or "min"

    def rounds(self, model: Any) -> int:
        """Rounds of a full training run (E-M iterations, or step slices)."""
        if isinstance(model, ZSCRGAN):
            return model.cfg.em_iterations
        return model.total_rounds()


MODELS: dict[str, ModelSpec] = {
    "zscrgan": ModelSpec(ZSCRGAN, ZSCRGANConfig, objective="precision@50", mode="max"),
    "cmgan": ModelSpec(CMGAN, CMGANConfig, objective="zsl/mfr", mode="min"),
}


def get_spec(family: str) -> ModelSpec:
    if family not in MODELS:
        raise ZsexpError(f"unknown model {family!r}; choose one of {', '.join(MODELS)}")
    return MODELS[family]


def make_config(family: str, data: ZSLData, *overrides: tuple[str, Any]) -> Any:
    """Paper defaults, then the dataset's size-appropriate defaults, then each override in order."""
    spec = get_spec(family)
    return build_config(spec.config_cls, (f"dataset {data.name} defaults", data.defaults.get(family, {})),
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


def build_model(family: str, cfg: Any, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                fit_split: str = "train") -> Any:
    return get_spec(family).model_cls(cfg, data, device=device, seed=seed, fit_split=fit_split)
