"""ConSE image representations (CM-GAN eq. 1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zsexp.data import (
    conse,
    conse_image_representations,
    seen_class_probabilities,
)
from zsexp.errors import ZsexpError


def test_conse_eq1_hand_case():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # top-2: classes 0 (0.5) and 1 (0.3), renormalised to 0.625 / 0.375
    assert torch.allclose(conse(probs, emb, 2), torch.tensor([[0.625, 0.375]]))
    assert torch.allclose(conse(probs, emb, 1), emb[:1])
    with pytest.raises(ZsexpError, match="1 <= K"):
        conse(probs, emb, 4)


def test_conse_uses_only_requested_seen_classes(tiny):
    # shipped probabilities restricted to train classes: columns in that order, rows sum to 1
    p = seen_class_probabilities(tiny, tiny.train_classes)
    assert p.shape == (tiny.n_images, len(tiny.train_classes)) and np.allclose(p.sum(1), 1, atol=1e-5)
    # without shipped probabilities a classifier is fitted on the seen classes' images only
    bare = dataclasses.replace(tiny, seen_probs=None, prob_classes=None)
    p2 = seen_class_probabilities(bare, bare.train_classes)
    tr = bare.images("train")
    index = {c: j for j, c in enumerate(bare.train_classes)}
    acc = (p2[tr].argmax(1) == np.array([index[c] for c in bare.labels[tr]])).mean()
    assert acc > 0.7
    v0 = conse_image_representations(bare, bare.train_classes, k=3)
    assert v0.shape == (bare.n_images, bare.text_dim) and np.isfinite(v0).all()

