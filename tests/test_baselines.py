"""The task baselines: tuned on validation only, never on test."""

from __future__ import annotations

import numpy as np

from zsexp.baselines import task_baseline
from zsexp.data import load_dataset


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

