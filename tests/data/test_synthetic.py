"""The built-in synthetic datasets: deterministic, shaped like the papers' data, learnable but not trivially."""

from __future__ import annotations

import numpy as np

from zsexp.data import (
    load_dataset,
    make_synthetic,
)


def test_synthetic_is_deterministic_and_seed_dependent():
    a, b = make_synthetic("synthetic-tiny", seed=0), make_synthetic("synthetic-tiny", seed=0)
    c = make_synthetic("synthetic-tiny", seed=1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert np.array_equal(a.features, b.features)


def test_synthetic_shapes_and_structure(tiny):
    d = tiny
    assert d.features.dtype == np.float32 and (d.features >= 0).all()
    assert 0.3 < (d.features == 0).mean() < 0.9             # sparse, ResNet-like
    assert d.text_features.shape == (d.n_images, d.text_dim)
    # splits disjoint, GZSL images are seen-class images excluded from train/val
    assert not set(d.train_classes) & set(d.test_classes)
    assert not set(d.images("train")) & set(d.images("test_seen"))
    assert np.isin(d.labels[d.images("test_seen")], d.classes("trainval")).all()


def test_synthetic_cub_and_imagenet_shapes():
    info = load_dataset("synthetic-cub").describe()
    assert info["dims"] == {"image": 2048, "text": 1024}
    assert [info["splits"][s]["classes"] for s in ("train", "val", "test")] == [100, 50, 50]
    im = load_dataset("synthetic-imagenet")
    assert len(im.test_classes) >= 10 * len(im.train_classes) // 2 and im.seen_probs is not None


def test_learnable_but_not_trivial(tiny):
    """Unseen-class images: the class mean is a good but not perfect classifier (overlap)."""
    te = tiny.images("test")
    x, y = tiny.features[te], tiny.labels[te]
    protos = np.stack([x[y == c].mean(0) for c in tiny.test_classes])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pn = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    acc = (tiny.test_classes[(xn @ pn.T).argmax(1)] == y).mean()
    assert 1.5 / len(tiny.test_classes) < acc < 0.99

