"""The one in-memory dataset type (DESIGN.md, "The data contract") and its validation.

Shapes: ``features`` float32 [N, Dv]; ``labels`` int64 [N] (0-based class index);
``class_embeddings`` float32 [C, Dt]; ``text_features`` float32 [N, Dt'] (optional, per image,
e.g. caption embeddings); ``seen_probs`` float32 [N, S] (optional, a seen-class classifier's
per-image probabilities over the classes ``prob_classes``, as CONSE needs).

Class splits are disjoint index arrays: ``train`` (seen), ``val`` (seen classes held out for
tuning, used as pseudo-unseen) and ``test`` (unseen).  ``test_seen_images`` are image indices
of seen (train + val) classes held out of training for generalised ZSL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zsexp.errors import ZsexpError

SPLITS = ("train", "val", "test", "test_seen")


def _preview(values: np.ndarray | list, n: int = 5) -> str:
    values = list(np.asarray(values).ravel()[: n + 1])
    text = ", ".join(str(v) for v in values[:n])
    return f"[{text}{', ...' if len(values) > n else ''}]"


def hold_out_per_class(labels: np.ndarray, classes: np.ndarray, fraction: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Sorted image indices: ``fraction`` of each class's images drawn at random (a class keeps at least
    one image and gives none when the fraction rounds to 0) -- the seen-class images held out for GZSL."""
    held = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * idx.size))
        if 0 < k < idx.size:
            held.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)


@dataclass
class ZSLData:
    name: str
    features: np.ndarray
    labels: np.ndarray
    class_embeddings: np.ndarray
    class_names: list[str]
    train_classes: np.ndarray
    val_classes: np.ndarray
    test_classes: np.ndarray
    test_seen_images: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    text_features: np.ndarray | None = None
    seen_probs: np.ndarray | None = None
    prob_classes: np.ndarray | None = None
    source: str = "memory"
    defaults: dict = field(default_factory=dict)  # size-appropriate model defaults (e.g. narrow widths)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    # ----------------------------------------------------------------- derived views
    @property
    def n_images(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    @property
    def image_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.class_embeddings.shape[1])

    def classes(self, split: str) -> np.ndarray:
        """Class indices of ``train``/``val``/``test``/``trainval``/``test_seen`` (= trainval)."""
        if split == "train":
            return self.train_classes
        if split == "val":
            return self.val_classes
        if split == "test":
            return self.test_classes
        if split in ("trainval", "test_seen", "seen"):
            return np.concatenate([self.train_classes, self.val_classes])
        raise ZsexpError(f"unknown split {split!r}; allowed: train, val, trainval, test, test_seen")

    def images(self, split: str) -> np.ndarray:
        """Image indices of a split; seen-class images held out for GZSL are never in train/val."""
        if split == "test_seen":
            return np.sort(self.test_seen_images)
        held_out = np.zeros(self.n_images, dtype=bool)
        held_out[self.test_seen_images] = True
        in_split = np.isin(self.labels, self.classes(split)) & ~held_out
        return np.flatnonzero(in_split)

    # ----------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A content hash (sha256, first 16 hex digits) over every array, name and split.

        Computed once per object (checkpoints record it every round): a validated dataset is not
        mutated afterwards, and :func:`validate` clears the cached value."""
        if self._fingerprint is None:
            self._fingerprint = self._hash()
        return self._fingerprint

    def _hash(self) -> str:
        h = hashlib.sha256()
        for arr in (self.features, self.labels, self.class_embeddings, self.train_classes,
                    self.val_classes, self.test_classes, np.sort(self.test_seen_images),
                    self.text_features, self.seen_probs, self.prob_classes):
            if arr is None:
                h.update(b"<none>")
                continue
            arr = np.ascontiguousarray(arr)
            h.update(str(arr.dtype).encode() + str(arr.shape).encode())
            h.update(arr.tobytes())
        h.update("\x1f".join(self.class_names).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        splits = {}
        for split in SPLITS:
            splits[split] = {"classes": int(len(self.classes(split)) if split != "test_seen"
                                            else len(np.unique(self.labels[self.images("test_seen")]))),
                             "images": int(len(self.images(split)))}
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint(),
            "dims": {"image": self.image_dim, "text": self.text_dim},
            "n_images": self.n_images,
            "n_classes": self.n_classes,
            "per_image_text": None if self.text_features is None else int(self.text_features.shape[1]),
            "seen_probs": None if self.seen_probs is None else int(self.seen_probs.shape[1]),
            "splits": splits,
        }


def _check_finite(name: str, arr: np.ndarray, where: str) -> None:
    if not np.issubdtype(arr.dtype, np.floating):
        raise ZsexpError(f"{where}: `{name}` must hold floats, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ZsexpError(
            f"{where}: `{name}` must be finite, but {int(bad.sum())} NaN/inf values were found "
            f"(rows {_preview(rows)})")


MAX_DATA_BYTES = 8 << 30       # what one dataset file may hold once decompressed (docs/safety.md)


def check_data_size(path: Any, arrays: list[tuple[str, tuple[int, ...], int]]) -> None:
    """Refuse a data file whose arrays (name, shape, item size), read from its headers before any array
    is read, hold more than :data:`MAX_DATA_BYTES` once decompressed (a compressed file can claim any size)."""
    total = 0
    for name, shape, itemsize in arrays:
        if any(d < 0 for d in shape):
            raise ZsexpError(f"{path}: array `{name}` has a negative dimension {shape}")
        total += int(np.prod(shape, dtype=object)) * int(itemsize)
        if total > MAX_DATA_BYTES:
            raise ZsexpError(f"{path}: its arrays hold more than {MAX_DATA_BYTES >> 30} GiB once decompressed "
                             f"(`{name}` {tuple(shape)}); refused before reading them")


def _check_informative(name: str, arr: np.ndarray, where: str) -> None:
    """A view with no dimensions, or the same vector for every row (all zero included), cannot tell
    images or classes apart: no model, baseline or metric on it means anything."""
    if arr.shape[1] == 0:
        raise ZsexpError(f"{where}: `{name}` has no feature dimensions (shape {arr.shape}); rule: at least one")
    if arr.shape[0] > 1 and not np.any(arr != arr[:1]):
        what = "all zero" if not np.any(arr) else "the same vector in every row"
        raise ZsexpError(f"{where}: `{name}` is {what} (shape {arr.shape}); rule: a view must differ between rows")


def validate(data: ZSLData) -> ZSLData:
    """Check every invariant of the data contract; raise :class:`ZsexpError` naming the field.

    Converts dtypes in place (float32 / int64) and returns ``data`` for chaining.
    """
    where = f"dataset {data.name!r} ({data.source})"
    data._fingerprint = None
    data.features = np.asarray(data.features)
    data.labels = np.asarray(data.labels)
    data.class_embeddings = np.asarray(data.class_embeddings)
    if data.features.ndim != 2:
        raise ZsexpError(f"{where}: `features` must be 2-D [N, Dv], got shape {data.features.shape}")
    if data.class_embeddings.ndim != 2:
        raise ZsexpError(
            f"{where}: `class_embeddings` must be 2-D [C, Dt], got shape {data.class_embeddings.shape}")
    _check_finite("features", data.features, where)
    _check_finite("class_embeddings", data.class_embeddings, where)
    _check_informative("features", data.features, where)
    _check_informative("class_embeddings", data.class_embeddings, where)
    data.features = data.features.astype(np.float32, copy=False)
    data.class_embeddings = data.class_embeddings.astype(np.float32, copy=False)
    n, c = data.features.shape[0], data.class_embeddings.shape[0]
    if n == 0 or c == 0:
        raise ZsexpError(f"{where}: needs at least one image and one class, got N={n}, C={c}")
    if data.labels.ndim != 1 or data.labels.shape[0] != n:
        raise ZsexpError(
            f"{where}: `labels` must be 1-D with one entry per image (N={n}), got shape {data.labels.shape}")
    if not np.issubdtype(data.labels.dtype, np.integer):
        if np.issubdtype(data.labels.dtype, np.floating) and np.all(data.labels == np.round(data.labels)):
            data.labels = data.labels.astype(np.int64)
        else:
            raise ZsexpError(f"{where}: `labels` must be integers, got dtype {data.labels.dtype}")
    data.labels = data.labels.astype(np.int64, copy=False)
    out = (data.labels < 0) | (data.labels >= c)
    if out.any():
        raise ZsexpError(
            f"{where}: `labels` must lie in [0, {c}) (one per class embedding), but got "
            f"{_preview(np.unique(data.labels[out]))} at images {_preview(np.flatnonzero(out))}")
    if len(data.class_names) != c:
        raise ZsexpError(f"{where}: `class_names` has {len(data.class_names)} entries, expected C={c}")
    _validate_splits(data, where, n, c)
    _validate_optional(data, where, n)
    return data


def _validate_splits(data: ZSLData, where: str, n: int, c: int) -> None:
    """Class splits: non-empty, no repeats, in range, pairwise disjoint, every class with images; the
    GZSL test images of seen classes."""
    split_sets = {}
    for split in ("train", "val", "test"):
        arr = np.asarray(getattr(data, f"{split}_classes")).astype(np.int64).ravel()
        setattr(data, f"{split}_classes", arr)
        if arr.size == 0:
            raise ZsexpError(f"{where}: class split `{split}` is empty; every split needs at least one class")
        if len(np.unique(arr)) != arr.size:
            raise ZsexpError(f"{where}: class split `{split}` lists classes twice: "
                             f"{_preview(arr[np.unique(arr, return_counts=True)[1] > 1])}")
        bad = arr[(arr < 0) | (arr >= c)]
        if bad.size:
            raise ZsexpError(f"{where}: class split `{split}` has indices outside [0, {c}): {_preview(bad)}")
        split_sets[split] = set(arr.tolist())
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(split_sets[a] & split_sets[b])
        if both:
            names = [data.class_names[i] for i in both[:5]]
            raise ZsexpError(f"{where}: class splits `{a}` and `{b}` overlap in {len(both)} classes "
                             f"{_preview(both)} ({', '.join(names)}); seen and unseen classes must be disjoint")

    data.test_seen_images = np.asarray(data.test_seen_images, dtype=np.int64).ravel()
    ts = data.test_seen_images
    if ts.size:
        bad = ts[(ts < 0) | (ts >= n)]
        if bad.size:
            raise ZsexpError(f"{where}: `test_seen_images` has indices outside [0, {n}): {_preview(bad)}")
        not_seen = ~np.isin(data.labels[ts], data.classes("trainval"))
        if not_seen.any():
            raise ZsexpError(f"{where}: `test_seen_images` must be images of seen (train/val) classes, but "
                             f"images {_preview(ts[not_seen])} have unseen labels")

    for split in ("train", "val", "test"):
        present = np.unique(data.labels[data.images(split)])
        missing = np.setdiff1d(data.classes(split), present)
        if missing.size:
            names = [data.class_names[i] for i in missing[:5]]
            raise ZsexpError(f"{where}: classes {_preview(missing)} ({', '.join(names)}) of split `{split}` "
                             f"have no images")


def _validate_optional(data: ZSLData, where: str, n: int) -> None:
    """Per-image text features and CONSE's seen-class probabilities, where the data has them."""
    if data.text_features is not None:
        data.text_features = np.asarray(data.text_features)
        if data.text_features.ndim != 2 or data.text_features.shape[0] != n:
            raise ZsexpError(f"{where}: `text_features` must be [N={n}, Dt], got {data.text_features.shape}")
        _check_finite("text_features", data.text_features, where)
        _check_informative("text_features", data.text_features, where)
        data.text_features = data.text_features.astype(np.float32, copy=False)
    if data.seen_probs is not None:
        data.seen_probs = np.asarray(data.seen_probs)
        if data.prob_classes is None:
            raise ZsexpError(f"{where}: `seen_probs` given without `prob_classes` (which classes its columns are)")
        data.prob_classes = np.asarray(data.prob_classes, dtype=np.int64).ravel()
        if data.seen_probs.ndim != 2 or data.seen_probs.shape != (n, data.prob_classes.size):
            raise ZsexpError(f"{where}: `seen_probs` must be [N={n}, S={data.prob_classes.size}], "
                             f"got {data.seen_probs.shape}")
        _check_finite("seen_probs", data.seen_probs, where)
        if (data.seen_probs < 0).any():
            raise ZsexpError(f"{where}: `seen_probs` must be non-negative probabilities")
        unseen = np.setdiff1d(data.prob_classes, data.classes("trainval"))
        if unseen.size:
            raise ZsexpError(f"{where}: `prob_classes` must be seen classes, but {_preview(unseen)} are unseen")
        data.seen_probs = data.seen_probs.astype(np.float32, copy=False)
