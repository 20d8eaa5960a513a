"""A documented ``.npz`` format for users' own embeddings.

Required arrays:
  ``features`` float [N, Dv], ``labels`` int [N] (0-based), ``class_embeddings`` float [C, Dt],
  ``train_classes``, ``val_classes``, ``test_classes`` int (0-based class indices, disjoint).
Optional arrays:
  ``class_names`` str [C] (default ``class_0000`` ...), ``test_seen_images`` int (image indices of
  seen classes held out for GZSL), ``text_features`` float [N, Dt'] (per-image text such as
  caption embeddings), ``seen_probs`` float [N, S] with ``prob_classes`` int [S] (a seen-class
  classifier's probabilities, used by CONSE; fitted from the features when absent).
Unknown arrays are rejected so that a typo is not silently ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsexp.data.schema import ZSLData, validate
from zsexp.errors import ZsexpError

REQUIRED = ("features", "labels", "class_embeddings", "train_classes", "val_classes", "test_classes")
OPTIONAL = ("class_names", "test_seen_images", "text_features", "seen_probs", "prob_classes")


def load_npz(path: str | Path) -> ZSLData:
    path = Path(path)
    if not path.is_file():
        raise ZsexpError(f"dataset file not found: {path}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise ZsexpError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ZsexpError(f"{path}: missing required arrays {missing} (required: {list(REQUIRED)})")
    unknown = sorted(set(arrays) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ZsexpError(f"{path}: unknown arrays {unknown}; allowed: {list(REQUIRED + OPTIONAL)}")
    n_cls = np.asarray(arrays["class_embeddings"]).shape[0]
    names = ([str(x) for x in arrays["class_names"]] if "class_names" in arrays
             else [f"class_{i:04d}" for i in range(n_cls)])
    return validate(ZSLData(
        name=path.stem, features=arrays["features"], labels=arrays["labels"],
        class_embeddings=arrays["class_embeddings"], class_names=names,
        train_classes=arrays["train_classes"], val_classes=arrays["val_classes"],
        test_classes=arrays["test_classes"],
        test_seen_images=arrays.get("test_seen_images", np.zeros(0, np.int64)),
        text_features=arrays.get("text_features"), seen_probs=arrays.get("seen_probs"),
        prob_classes=arrays.get("prob_classes"), source=f"npz:{path}"))


def save_npz(data: ZSLData, path: str | Path) -> None:
    arrays = {"features": data.features, "labels": data.labels, "class_embeddings": data.class_embeddings,
              "train_classes": data.train_classes, "val_classes": data.val_classes,
              "test_classes": data.test_classes, "class_names": np.asarray(data.class_names),
              "test_seen_images": data.test_seen_images}
    for key in ("text_features", "seen_probs", "prob_classes"):
        if getattr(data, key) is not None:
            arrays[key] = getattr(data, key)
    np.savez_compressed(path, **arrays)
