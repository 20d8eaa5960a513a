"""What every model family's trainer shares: how it is built, what a checkpoint says of it, the round API.

A trainer is a plain object (no Ray, no MLflow): ``train_round()`` runs one round (an E-M iteration, a
slice of an alternating step, a closed-form fit) and returns its losses; ``evaluate(split)`` the split's
metrics; ``state_dict()`` / ``load_state_dict()`` cover every network, optimiser, RNG and counter, so a
trial resumes bit for bit from a checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.models.common import check_fit_split, device_generator


class Trainer:
    """The constructor every family takes (config, data, device, seed, the classes it fits; its random
    generator on the device, which draws nothing from torch's global one) and the header of every
    checkpoint."""

    family = ""

    def __init__(self, cfg: Any, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                 fit_split: str = "train"):
        self.cfg, self.data, self.device, self.seed = cfg, data, torch.device(device), seed
        self.fit_split = check_fit_split(fit_split)
        self.gen = device_generator(self.device, seed)      # all training randomness, on the model's device

    def total_rounds(self) -> int:
        raise NotImplementedError

    def train_round(self) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, split: str = "val", **per_unit: bool) -> dict[str, Any]:
        raise NotImplementedError

    def state_header(self) -> dict[str, Any]:
        """What every checkpoint starts with: the family, its config, the seed and the classes it fits."""
        return {"family": self.family, "config": asdict(self.cfg), "seed": self.seed, "fit_split": self.fit_split}

    def check_state(self, state: dict[str, Any]) -> None:
        """Refuse a checkpoint of another family before any tensor is loaded."""
        if state.get("family") != self.family:
            raise ZsexpError(f"checkpoint is for model {state.get('family')!r}, not {self.family!r}")
