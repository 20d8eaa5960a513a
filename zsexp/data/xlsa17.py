"""Reader for the xlsa17 release of Xian et al. ("Zero-Shot Learning - The Good, the Bad and the Ugly").

Layout of a dataset directory (how CUB, AWA1/2, FLO and SUN are distributed):

- ``res101.mat``: ``features`` [2048 x N] (column per image), ``labels`` [N x 1], 1-based classes.
- ``att_splits.mat`` (or one ``*_splits.mat`` such as ``CUB_sent_splits.mat``): ``att`` [D x C]
  class embeddings (column per class), ``allclasses_names`` (MATLAB cell array),
  ``train_loc``, ``val_loc``, ``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc``:
  1-based image indices into ``res101.mat``.

Mapping to the data contract: ``train``/``val`` classes are the labels of ``train_loc`` /
``val_loc`` (the proposed split's disjoint tuning split), ``test`` classes those of
``test_unseen_loc``; ``test_seen_loc`` images are held out of training for GZSL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsexp.data.schema import ZSLData, check_data_size, validate
from zsexp.errors import ZsexpError

SPLIT_KEYS = ("train_loc", "val_loc", "trainval_loc", "test_seen_loc", "test_unseen_loc")


def _loadmat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise ZsexpError(f"dataset file not found: {path}")
    try:                  # shapes from the file's headers first: a compressed element can claim any size
        sizes = {"double": 8, "single": 4, "int64": 8, "uint64": 8, "int32": 4, "uint32": 4, "int16": 2,
                 "uint16": 2, "int8": 1, "uint8": 1, "logical": 1, "char": 4}
        listed = [(n, shape, sizes.get(cls, 8)) for n, shape, cls in scipy.io.whosmat(str(path))]
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ZsexpError(f"{path}: not a readable MATLAB .mat file ({str(exc)[:200]})") from None
    names = [n for n, _, _ in listed]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:                             # scipy would silently keep one of them
        raise ZsexpError(f"{path}: variable(s) {twice[:5]} stored twice; which one is meant is ambiguous")
    check_data_size(path, listed)
    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ZsexpError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc


def _cell_strings(cell: np.ndarray) -> list[str]:
    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        while isinstance(item, np.ndarray) and item.dtype == object and item.size == 1:
            item = item.ravel()[0]
        out.append(str(np.asarray(item).ravel()[0]) if isinstance(item, np.ndarray) else str(item))
    return out


def find_splits_file(directory: Path) -> Path:
    if (directory / "att_splits.mat").is_file():
        return directory / "att_splits.mat"
    candidates = sorted(directory.glob("*_splits.mat"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ZsexpError(f"{directory}: no att_splits.mat (or *_splits.mat) found; an xlsa17 dataset directory "
                         f"holds res101.mat and att_splits.mat")
    raise ZsexpError(f"{directory}: several split files {[c.name for c in candidates]}; keep exactly one "
                     f"*_splits.mat (or an att_splits.mat) beside res101.mat")


def read_class_level(splits_path: Path) -> dict:
    """Class embeddings [C, D], class names and 0-based split index arrays from a splits file."""
    mat = _loadmat(splits_path)
    missing = [k for k in ("att", *SPLIT_KEYS) if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ZsexpError(f"{splits_path}: missing keys {missing}; found {found}")
    att = np.asarray(mat["att"], dtype=np.float64)
    if att.ndim != 2:
        raise ZsexpError(f"{splits_path}: `att` must be 2-D [D x C], got shape {att.shape}")
    # FLO's release has no `allclasses_names`: fall back to 1-based ids as the release numbers them
    names = (_cell_strings(mat["allclasses_names"]) if "allclasses_names" in mat
             else [f"class_{i + 1:03d}" for i in range(att.shape[1])])
    if len(names) != att.shape[1]:
        raise ZsexpError(f"{splits_path}: `att` has {att.shape[1]} class columns but `allclasses_names` "
                         f"has {len(names)} names")
    locs = {}
    for key in SPLIT_KEYS:
        loc = np.asarray(mat[key]).astype(np.int64).ravel()
        if loc.size and loc.min() < 1:
            raise ZsexpError(f"{splits_path}: `{key}` holds index {loc.min()}; xlsa17 indices are 1-based")
        locs[key] = loc - 1
    return {"att": att.T.astype(np.float32), "names": names, "locs": locs}


def load_xlsa17(directory: str | Path, splits_file: str | Path | None = None) -> ZSLData:
    directory = Path(directory)
    if not directory.is_dir():
        raise ZsexpError(f"xlsa17 dataset directory not found: {directory}")
    splits_path = Path(splits_file) if splits_file else find_splits_file(directory)
    cls = read_class_level(splits_path)
    res_path = directory / "res101.mat"
    res = _loadmat(res_path)
    for key in ("features", "labels"):
        if key not in res:
            raise ZsexpError(f"{res_path}: missing key `{key}`")
    feats = np.asarray(res["features"])
    labels = np.asarray(res["labels"]).astype(np.int64).ravel()
    if feats.ndim != 2 or feats.shape[1] != labels.size:
        raise ZsexpError(f"{res_path}: `features` must be [D x N] with N = len(labels) = {labels.size}, "
                         f"got shape {feats.shape}")
    if labels.size and labels.min() < 1:
        raise ZsexpError(f"{res_path}: `labels` holds {labels.min()}; xlsa17 labels are 1-based")
    n = labels.size
    locs = cls["locs"]
    for key, loc in locs.items():
        if loc.size and loc.max() >= n:
            raise ZsexpError(f"{splits_path}: `{key}` points at image {loc.max() + 1} "
                             f"but {res_path} has {n} images")
    labels0 = labels - 1

    def classes_of(key: str) -> np.ndarray:
        return np.unique(labels0[locs[key]])

    return validate(ZSLData(
        name=directory.name, features=feats.T, labels=labels0, class_embeddings=cls["att"],
        class_names=cls["names"], train_classes=classes_of("train_loc"), val_classes=classes_of("val_loc"),
        test_classes=classes_of("test_unseen_loc"), test_seen_images=np.unique(locs["test_seen_loc"]),
        source=f"xlsa17:{directory}"))
