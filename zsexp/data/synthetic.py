"""Built-in synthetic datasets, deterministic by seed.

Generative story (the structure a model has to *learn*, none of it handed over):

1. Each class has a latent semantic vector ``s_c`` drawn around one of a few super-class
   centres, so classes of one super-class overlap (like "Crested" vs "Rhinoceros Auklet").
2. A hidden non-linear map turns semantics into a visual prototype:
   ``p_c = relu(tanh(s_c W1) W2 + b)`` with a negative bias, so features are non-negative and
   sparse like ResNet-101 pool5 activations.
3. An image of class c is ``relu(tanh((s_c + e) W1) W2 + b + n)``: latent spread ``e`` (pose,
   background) plus feature noise ``n`` give intra-class spread and cross-class overlap.
4. The class text is ``[s_c, u_c] A``: a linear view of the semantics mixed with a class-specific
   nuisance ``u_c`` that says nothing about appearance, so text only partly predicts the image.
   Per-image captions add per-image noise to the class text.
5. ``synthetic-imagenet`` also ships ``seen_probs``: a simulated seen-class CNN, the softmax of
   scaled cosine similarities between an image and the seen classes' mean training features,
   which CONSE turns into the image representation (CM-GAN eq. 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zsexp.data.schema import ZSLData, hold_out_per_class, validate


@dataclass(frozen=True)
class SyntheticSpec:
    n_train: int
    n_val: int
    n_test: int
    image_dim: int
    text_dim: int
    images_per_seen_class: int
    images_per_unseen_class: int
    latent_dim: int = 24
    n_super: int = 6
    super_spread: float = 0.8     # distance of a class from its super-class centre (latent units)
    image_spread: float = 0.55    # latent spread of images around their class
    feature_noise: float = 0.15
    nuisance: float = 0.8         # weight of the text-only nuisance u_c
    caption_noise: float = 0.3
    test_seen_fraction: float = 0.2
    per_image_text: bool = True
    seen_probs: bool = False
    cnn_temperature: float = 0.05
    word_prefix: str = "class"
    defaults: dict = field(default_factory=dict)


# Narrow model widths for the small sets keep CPU runs short; real data keeps the paper's.
SPECS: dict[str, SyntheticSpec] = {
    "synthetic-tiny": SyntheticSpec(
        n_train=12, n_val=6, n_test=6, image_dim=64, text_dim=32,
        images_per_seen_class=30, images_per_unseen_class=30, latent_dim=12, n_super=4,
        super_spread=0.7, image_spread=0.8, feature_noise=0.2, seen_probs=True,
        defaults={"zscrgan": {"g_hidden": [128, 128], "d_hidden": 128, "latent_dim": 32, "noise_dim": 16,
                              "batch_size": 32, "em_iterations": 30},
                  "cmgan": {"hidden": 64, "d_hidden": 64, "iters_per_step": 300, "batch_size": 64,
                            "lr": 1e-3, "lr_d": 1e-3, "conse_k": 5}}),
    "synthetic-cub": SyntheticSpec(
        n_train=100, n_val=50, n_test=50, image_dim=2048, text_dim=1024,
        images_per_seen_class=60, images_per_unseen_class=60, latent_dim=32, n_super=12,
        super_spread=0.5, image_spread=1.1, feature_noise=0.3,
        defaults={"zscrgan": {"g_hidden": [512, 1024], "d_hidden": 512, "latent_dim": 256,
                              "noise_dim": 64, "batch_size": 64, "em_iterations": 20},
                  "cmgan": {"hidden": 256, "d_hidden": 256, "conse_k": 10}}),
    "synthetic-imagenet": SyntheticSpec(
        n_train=250, n_val=50, n_test=2000, image_dim=128, text_dim=300,
        images_per_seen_class=12, images_per_unseen_class=5, latent_dim=32, n_super=20,
        super_spread=0.7, image_spread=0.8, feature_noise=0.2,
        per_image_text=False, seen_probs=True, test_seen_fraction=0.2,
        defaults={"zscrgan": {"g_hidden": [256, 256], "d_hidden": 256, "latent_dim": 64, "noise_dim": 32,
                              "batch_size": 64, "em_iterations": 12},
                  "cmgan": {"hidden": 300, "d_hidden": 256, "conse_k": 10}}),
}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def _seen_class_probs(feats: np.ndarray, labels: np.ndarray, prob_classes: np.ndarray, held_out: np.ndarray,
                      temperature: float) -> np.ndarray:
    """A seen-class CNN's softmax, simulated: cosine to each seen class's mean training image (the GZSL
    held-out images excluded) at ``temperature``; the input of CONSE (CM-GAN eq. 1)."""
    held = np.zeros(labels.size, bool)
    held[held_out] = True
    protos = np.stack([feats[(labels == c) & ~held].mean(0) for c in prob_classes])
    fn = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-8)
    pn = protos / (np.linalg.norm(protos, axis=1, keepdims=True) + 1e-8)
    return _softmax((fn @ pn.T) / temperature).astype(np.float32)


def _generate(spec: SyntheticSpec, rng: np.random.Generator, n_seen: int,
              n_cls: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Steps 1-4 of the generator, in generation order (seen classes first): labels, image features, class
    text and per-image captions (None unless the spec has them).  Draws from ``rng`` in a fixed order."""
    d = spec.latent_dim

    # 1. class semantics around super-class centres
    centres = rng.standard_normal((spec.n_super, d))
    supers = rng.integers(0, spec.n_super, size=n_cls)
    sem = centres[supers] + spec.super_spread * rng.standard_normal((n_cls, d))

    # 2. hidden non-linear semantics -> visual map
    hidden = 2 * d
    w1 = rng.standard_normal((d, hidden)) / np.sqrt(d)
    w2 = rng.standard_normal((hidden, spec.image_dim)) * (1.5 / np.sqrt(hidden))
    bias = -0.6 * np.ones(spec.image_dim)

    def visual(latent: np.ndarray) -> np.ndarray:
        return np.tanh(latent @ w1) @ w2 + bias

    # 3. images; seen classes first, then unseen
    counts = np.where(np.arange(n_cls) < n_seen, spec.images_per_seen_class, spec.images_per_unseen_class)
    labels = np.repeat(np.arange(n_cls), counts)
    latent = sem[labels] + spec.image_spread * rng.standard_normal((labels.size, d))
    feats = visual(latent) + spec.feature_noise * rng.standard_normal((labels.size, spec.image_dim))
    feats = np.maximum(feats, 0.0).astype(np.float32)

    # 4. class text: partial linear view of the semantics plus a text-only nuisance
    nuis = rng.standard_normal((n_cls, d))
    a = rng.standard_normal((2 * d, spec.text_dim)) / np.sqrt(2 * d)
    text = np.concatenate([sem, spec.nuisance * nuis], axis=1) @ a
    text = text.astype(np.float32)
    captions = None
    if spec.per_image_text:
        captions = (text[labels] + spec.caption_noise * np.abs(text).mean()
                    * rng.standard_normal((labels.size, spec.text_dim))).astype(np.float32)
    return labels, feats, text, captions


def make_synthetic(name: str, seed: int = 0, spec: SyntheticSpec | None = None) -> ZSLData:
    """Generate the named synthetic dataset (or one from ``spec``); same seed, same bytes."""
    spec = spec or SPECS[name]
    rng = np.random.default_rng(seed)
    n_seen = spec.n_train + spec.n_val
    n_cls = n_seen + spec.n_test
    labels, feats, text, captions = _generate(spec, rng, n_seen, n_cls)

    # class splits: generation index g (seen first) becomes class id perm[g], so split membership
    # cannot be read from the class index and super-classes straddle seen and unseen
    perm = rng.permutation(n_cls)
    train_c = np.sort(perm[: spec.n_train])
    val_c = np.sort(perm[spec.n_train: n_seen])
    test_c = np.sort(perm[n_seen:])
    labels = perm[labels]
    text_by_class = np.empty_like(text)
    text_by_class[perm] = text
    class_names = [f"{spec.word_prefix}_{i:04d}" for i in range(n_cls)]

    # GZSL: hold out a fraction of each seen class's images
    test_seen_images = hold_out_per_class(labels, np.concatenate([train_c, val_c]), spec.test_seen_fraction, rng)

    seen_probs = prob_classes = None
    if spec.seen_probs:       # 5. a simulated seen-class CNN
        prob_classes = np.sort(np.concatenate([train_c, val_c]))
        seen_probs = _seen_class_probs(feats, labels, prob_classes, test_seen_images, spec.cnn_temperature)

    data = ZSLData(
        name=name, features=feats, labels=labels, class_embeddings=text_by_class,
        class_names=class_names, train_classes=train_c, val_classes=val_c, test_classes=test_c,
        test_seen_images=test_seen_images, text_features=captions, seen_probs=seen_probs,
        prob_classes=prob_classes, source=f"synthetic(seed={seed})", defaults=spec.defaults)
    return validate(data)
