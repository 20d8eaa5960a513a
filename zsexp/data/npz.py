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

from zsexp.data.schema import ZSLData, check_data_size, validate
from zsexp.errors import ZsexpError

REQUIRED = ("features", "labels", "class_embeddings", "train_classes", "val_classes", "test_classes")
OPTIONAL = ("class_names", "test_seen_images", "text_features", "seen_probs", "prob_classes")


def load_npz(path: str | Path) -> ZSLData:
    path = Path(path)
    if not path.is_file():
        raise ZsexpError(f"dataset file not found: {path}")
    _check_headers(path)
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise ZsexpError(f"{path}: not a readable .npz file ({str(exc)[:200]})") from None
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


def _check_headers(path: Path) -> None:
    """Every member's shape and dtype from its ``.npy`` header, before anything is decompressed: a file
    with an array of another name, or whose arrays would exceed the data bound, is refused unread."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            listed = [m.filename.removesuffix(".npy") for m in members]
            twice = sorted({n for n in listed if listed.count(n) > 1})
            if twice:                     # numpy would silently read one of them
                raise ZsexpError(f"{path}: array(s) {twice[:5]} stored twice; which one is meant is ambiguous")
            names = set(listed)
            missing = [k for k in REQUIRED if k not in names]
            if missing:
                raise ZsexpError(f"{path}: missing required arrays {missing} (required: {list(REQUIRED)})")
            unknown = sorted({m.filename.removesuffix(".npy") for m in members} - set(REQUIRED) - set(OPTIONAL))
            if unknown:
                raise ZsexpError(f"{path}: unknown arrays {unknown[:10]}{' ...' if len(unknown) > 10 else ''} "
                                 f"({len(members)} in all); allowed: {list(REQUIRED + OPTIONAL)}")
            shapes = []
            for m in members:
                with z.open(m) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f, max_header_size=10_000)
                shapes.append((m.filename.removesuffix(".npy"), shape, dtype.itemsize))
    except ZsexpError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise several types for a damaged file
        raise ZsexpError(f"{path}: not a readable .npz file ({type(exc).__name__}: {str(exc)[:200]})") from None
    check_data_size(path, shapes)


def save_npz(data: ZSLData, path: str | Path) -> None:
    arrays = {"features": data.features, "labels": data.labels, "class_embeddings": data.class_embeddings,
              "train_classes": data.train_classes, "val_classes": data.val_classes,
              "test_classes": data.test_classes, "class_names": np.asarray(data.class_names),
              "test_seen_images": data.test_seen_images}
    for key in ("text_features", "seen_probs", "prob_classes"):
        if getattr(data, key) is not None:
            arrays[key] = getattr(data, key)
    np.savez_compressed(path, **arrays)
