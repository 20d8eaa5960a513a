"""Loaders: xlsa17 class-level files, .npz, the UCI digits as a real two-view set, `zsexp data`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from tests.conftest import SHARED_DATA
from zsexp.cli import main
from zsexp.data import (
    load_dataset,
    load_npz,
    load_xlsa17,
    save_npz,
)
from zsexp.data.xlsa17 import read_class_level
from zsexp.errors import ZsexpError
from zsexp.models import build_model, make_config, size_defaults


def _write_xlsa17(tmp_path, n_cls=9, per=6, dim=16, att_dim=5):
    """A tiny dataset in exactly the xlsa17 layout (column-major, 1-based, cell-array names)."""
    rng = np.random.default_rng(0)
    labels1 = np.repeat(np.arange(1, n_cls + 1), per)                      # 1-based
    feats = rng.random((dim, labels1.size))                                # [D x N]
    tr, va, te = [1, 2, 3, 4], [5, 6], [7, 8, 9]
    idx1 = np.arange(1, labels1.size + 1)
    train_loc = idx1[np.isin(labels1, tr)]
    val_loc = idx1[np.isin(labels1, va)]
    test_seen = np.concatenate([train_loc[::per], val_loc[::per]])
    trainval = np.setdiff1d(np.concatenate([train_loc, val_loc]), test_seen)
    names = np.empty((n_cls, 1), dtype=object)
    for i in range(n_cls):
        names[i, 0] = np.array([f"{i + 1:03d}.class"])
    scipy.io.savemat(tmp_path / "res101.mat", {"features": feats, "labels": labels1[:, None]})
    scipy.io.savemat(tmp_path / "att_splits.mat", {
        "att": rng.random((att_dim, n_cls)), "allclasses_names": names,
        "train_loc": train_loc[:, None], "val_loc": val_loc[:, None], "trainval_loc": trainval[:, None],
        "test_seen_loc": test_seen[:, None], "test_unseen_loc": idx1[np.isin(labels1, te)][:, None]})
    return feats, labels1


REAL = {"CUB_sent_splits.mat": (1024, 200, 100, 50, 50), "AWA1_att_splits.mat": (85, 50, 27, 13, 10),
        "FLO_att_splits.mat": (1024, 102, 62, 20, 20), "SUN_att_splits.mat": (102, 717, 580, 65, 72)}


MFEAT = Path(__file__).resolve().parents[3] / "shared" / "data" / "uci-mfeat"


def test_xlsa17_loader(tmp_path):
    feats, labels1 = _write_xlsa17(tmp_path)
    d = load_xlsa17(tmp_path)
    assert d.features.shape == (labels1.size, 16) and np.allclose(d.features, feats.T)
    assert list(d.train_classes) == [0, 1, 2, 3] and list(d.val_classes) == [4, 5]
    assert list(d.test_classes) == [6, 7, 8]
    assert d.class_names[0] == "001.class" and d.class_embeddings.shape == (9, 5)
    assert len(d.images("test_seen")) == 6
    assert load_dataset(str(tmp_path)).fingerprint() == d.fingerprint()


def test_xlsa17_errors(tmp_path):
    with pytest.raises(ZsexpError, match="not found"):
        load_xlsa17(tmp_path / "missing")
    _write_xlsa17(tmp_path)
    (tmp_path / "res101.mat").write_bytes(b"garbage")
    with pytest.raises(ZsexpError, match="res101.mat"):
        load_xlsa17(tmp_path)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared/data/xlsa17 not beside this checkout")
@pytest.mark.parametrize("fname", sorted(REAL))
def test_real_xlsa17_class_level_files(fname, tmp_path):
    dim, n_cls, n_tr, n_va, n_te = REAL[fname]
    cls = read_class_level(SHARED_DATA / fname)
    assert cls["att"].shape == (n_cls, dim) and len(cls["names"]) == n_cls
    locs = cls["locs"]
    # the xlsa17 invariant: train ∪ val images = trainval ∪ test_seen images
    assert set(locs["train_loc"]) | set(locs["val_loc"]) == set(locs["trainval_loc"]) | set(locs["test_seen_loc"])
    # pair with a generated res101.mat whose labels agree with the split arrays
    n = 1 + max(int(v.max()) for v in locs.values())
    rng = np.random.default_rng(0)
    perm = rng.permutation(n_cls)
    tr, va, te = perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:n_tr + n_va + n_te]
    labels = np.zeros(n, np.int64)
    labels[locs["train_loc"]] = tr[np.arange(locs["train_loc"].size) % n_tr]
    labels[locs["val_loc"]] = va[np.arange(locs["val_loc"].size) % n_va]
    labels[locs["test_unseen_loc"]] = te[np.arange(locs["test_unseen_loc"].size) % n_te]
    d = tmp_path / "ds"
    d.mkdir()
    (d / fname).write_bytes((SHARED_DATA / fname).read_bytes())
    scipy.io.savemat(d / "res101.mat", {"features": rng.random((4, n)), "labels": labels[:, None] + 1})
    data = load_xlsa17(d)
    assert (len(data.train_classes), len(data.val_classes), len(data.test_classes)) == (n_tr, n_va, n_te)
    assert data.class_names == cls["names"]


def test_npz_round_trip_and_errors(tmp_path, tiny):
    path = tmp_path / "mine.npz"
    save_npz(tiny, path)
    back = load_npz(path)
    assert back.fingerprint() == tiny.fingerprint()
    np.savez(tmp_path / "bad.npz", features=tiny.features, labels=tiny.labels, typo=np.zeros(1))
    with pytest.raises(ZsexpError, match="missing required arrays"):
        load_npz(tmp_path / "bad.npz")
    arrays = dict(np.load(path))
    arrays["extra_thing"] = np.zeros(2)
    np.savez(tmp_path / "unknown.npz", **arrays)
    with pytest.raises(ZsexpError, match="unknown arrays.*extra_thing"):
        load_npz(tmp_path / "unknown.npz")


@pytest.mark.skipif(not MFEAT.is_dir(), reason="shared/data/uci-mfeat not beside this checkout")
def test_uci_digits_splits_and_views():
    a, b = load_dataset(str(MFEAT), seed=0), load_dataset(str(MFEAT), seed=1)
    assert (len(a.train_classes), len(a.val_classes), len(a.test_classes)) == (6, 2, 2)
    assert not set(a.train_classes) & set(a.test_classes) and a.n_images == 2000
    assert not np.array_equal(a.test_classes, b.test_classes) or not np.array_equal(a.val_classes, b.val_classes)
    assert a.image_dim == 240 and a.text_dim == 76 and 0 <= a.features.min() and a.features.max() <= 1
    seen = a.text_features[np.isin(a.labels, a.train_classes)]
    assert abs(seen.mean()) < 0.05                           # z-scored with the training classes' statistics
    kl = load_dataset(f"{MFEAT}:kl-fourier", seed=0)
    assert kl.text_dim == 64 and kl.image_dim == 76 and "kl-fourier" in kl.name
    with pytest.raises(ZsexpError, match="two different views"):
        load_dataset(f"{MFEAT}:pixels-pixels")
    assert size_defaults("zscrgan", a)["updates_per_step"] == 100        # a small real set gets the size rule
    m = build_model("ridge", make_config("ridge", a), a)
    m.train_round()
    assert m.evaluate("test")["precision@50"] > m.chance("test")["precision@50"]


def test_cli_data_describe_json(capsys):
    assert main(["data", "describe", "synthetic-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) >= {"name", "fingerprint", "dims", "splits"}
    assert set(info["splits"]) == {"train", "val", "test", "test_seen"}
    assert info["splits"]["train"] == {"classes": 12, "images": 288}


def test_cli_missing_dataset_is_one_line_exit_2(capsys):
    assert main(["data", "describe", "/no/such/dir"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zsexp: error:") and "/no/such/dir" in err and "Traceback" not in err

