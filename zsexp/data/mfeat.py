"""UCI "Multiple Features" handwritten digits as a real two-view zero-shot set.

The directory holds ``uci_all.mat`` (2,000 digits, 200 per class '0'-'9', each described by three real
feature sets; see its README).  zsexp reads it as a cross-modal retrieval / ZSL problem:

* one view is the per-item "text" (``text_features``; the query side) and its class mean is the class
  embedding; another view is the "image" gallery (``features``).  Default ``fourier-pixels``: the 76
  Fourier coefficients are the text, the 240 pixel averages (0-6, scaled to [0, 1], non-negative like
  CNN features) the images.  ``DIR:TEXT-IMAGE`` picks other views among ``fourier``, ``kl``, ``pixels``
  (two different ones);
* the text view is z-scored with the mean and standard deviation of the training classes' items only
  (an affine map learnt on seen data; the test classes choose nothing);
* the class split is random and reproducible: ``seed`` (``--data-seed``) draws 6 train / 2 val / 2 test
  classes, so results are averaged over several ``--data-seed`` values; 20 % of each seen class's
  images are held out for generalised ZSL (``test_seen``).

The 1,500 / 500 row split of the file carries no meaning for zero-shot use: the rows are concatenated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsexp.data.schema import ZSLData, hold_out_per_class, validate
from zsexp.errors import ZsexpError

MAT_FILE = "uci_all.mat"
VIEWS = {"fourier": "I", "kl": "T", "pixels": "P"}
DEFAULT_VIEWS = ("fourier", "pixels")
N_TRAIN, N_VAL, N_TEST = 6, 2, 2
TEST_SEEN_FRACTION = 0.2


def is_mfeat(path: Path) -> bool:
    return (path / MAT_FILE).is_file()


def parse_views(spec: str | None, where: str) -> tuple[str, str]:
    if not spec:
        return DEFAULT_VIEWS
    parts = spec.split("-")
    if len(parts) != 2 or any(p not in VIEWS for p in parts) or parts[0] == parts[1]:
        raise ZsexpError(f"{where}: views {spec!r} must be TEXT-IMAGE with two different views among "
                         f"{', '.join(VIEWS)} (e.g. fourier-pixels)")
    return parts[0], parts[1]


def _view(mat: dict, name: str, path: Path) -> np.ndarray:
    key = VIEWS[name]
    try:
        x = np.concatenate([np.asarray(mat[f"{key}_tr"]), np.asarray(mat[f"{key}_te"])]).astype(np.float64)
    except KeyError as exc:
        raise ZsexpError(f"{path}: missing array {exc.args[0]!r} ({name} view)") from exc
    if name == "pixels":
        x = x / 6.0                        # pixel averages 0..6 -> [0, 1]
    if not np.isfinite(x).all():
        raise ZsexpError(f"{path}: the {name} view has non-finite values")
    return x


def load_mfeat(path: str | Path, seed: int = 0, views: str | None = None) -> ZSLData:
    path = Path(path)
    text_view, image_view = parse_views(views, str(path))
    mat_path = path / MAT_FILE
    if not mat_path.is_file():
        raise ZsexpError(f"{path}: no {MAT_FILE} (UCI multiple-features digits)")
    from zsexp.data.xlsa17 import _loadmat

    mat = _loadmat(mat_path)             # bounded from its headers, like every .mat zsexp reads
    try:
        labels = np.concatenate([np.asarray(mat["L_tr"]).ravel(), np.asarray(mat["L_te"]).ravel()]).astype(np.int64) - 1
    except KeyError as exc:
        raise ZsexpError(f"{mat_path}: missing label array {exc.args[0]!r}") from exc
    text, image = _view(mat, text_view, mat_path), _view(mat, image_view, mat_path)
    if not (len(labels) == len(text) == len(image)):
        raise ZsexpError(f"{mat_path}: {len(labels)} labels but {len(text)} / {len(image)} rows in the views")
    n_cls = int(labels.max()) + 1
    if labels.min() != 0 or n_cls < N_TRAIN + N_VAL + N_TEST:
        raise ZsexpError(f"{mat_path}: labels must be 1..{N_TRAIN + N_VAL + N_TEST} or more, got "
                         f"{labels.min() + 1}..{labels.max() + 1}")

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_cls)
    train_c = np.sort(perm[:N_TRAIN])
    val_c = np.sort(perm[N_TRAIN:N_TRAIN + N_VAL])
    test_c = np.sort(perm[N_TRAIN + N_VAL:N_TRAIN + N_VAL + N_TEST])
    test_seen_images = hold_out_per_class(labels, np.concatenate([train_c, val_c]), TEST_SEEN_FRACTION, rng)

    fit = np.isin(labels, train_c)                 # text normalisation from training classes only
    fit[test_seen_images] = False
    mu, sd = text[fit].mean(0), text[fit].std(0)
    text = (text - mu) / np.where(sd > 1e-12, sd, 1.0)
    class_emb = np.stack([text[labels == c].mean(0) for c in range(n_cls)])
    return validate(ZSLData(
        name=f"uci-mfeat-{text_view}-{image_view}-split{seed}", features=image.astype(np.float32), labels=labels,
        class_embeddings=class_emb.astype(np.float32), class_names=[f"digit_{c}" for c in range(n_cls)],
        train_classes=train_c, val_classes=val_c, test_classes=test_c, test_seen_images=test_seen_images,
        text_features=text.astype(np.float32), source=f"uci-mfeat:{path} views={text_view}-{image_view} seed={seed}"))
