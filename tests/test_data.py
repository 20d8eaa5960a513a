"""The data layer: synthetic generators, validation errors, xlsa17 and .npz loaders, CONSE."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import scipy.io
import torch

from tests.conftest import SHARED_DATA
from zsexp.cli import main
from zsexp.data import (
    ZSLData,
    conse,
    conse_image_representations,
    load_dataset,
    load_npz,
    load_xlsa17,
    make_synthetic,
    save_npz,
    seen_class_probabilities,
    validate,
)
from zsexp.data.xlsa17 import read_class_level
from zsexp.errors import ZsexpError


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


def _good(**kw) -> ZSLData:
    base = make_synthetic("synthetic-tiny")
    d = dataclasses.replace(base, features=base.features.copy(), labels=base.labels.copy(),
                            class_embeddings=base.class_embeddings.copy(), **kw)
    return d


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.features.__setitem__((3, 2), np.nan), r"`features` must be finite.*rows \[3\]"),
    (lambda d: d.class_embeddings.__setitem__((1, 0), np.inf), "`class_embeddings` must be finite"),
    (lambda d: setattr(d, "features", d.features[:, :, None]), "must be 2-D"),
    (lambda d: setattr(d, "labels", d.labels[:-1]), "one entry per image"),
    (lambda d: d.labels.__setitem__(0, 999), r"must lie in \[0, 24\).*999"),
    (lambda d: setattr(d, "val_classes", np.array([], dtype=np.int64)), "`val` is empty"),
    (lambda d: setattr(d, "test_classes", np.concatenate([d.test_classes, d.train_classes[:1]])),
     "`train` and `test` overlap"),
    (lambda d: setattr(d, "class_names", d.class_names[:-1]), "class_names"),
    (lambda d: setattr(d, "text_features", np.ones((3, 4), np.float32)), "text_features"),
])
def test_validate_rejects(mutate, match):
    d = _good()
    mutate(d)
    with pytest.raises(ZsexpError, match=match):
        validate(d)


def test_validate_rejects_class_without_images():
    d = _good()
    lonely = d.test_classes[0]
    d.labels[d.labels == lonely] = d.test_classes[1]
    with pytest.raises(ZsexpError, match="have no images"):
        validate(d)


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


REAL = {"CUB_sent_splits.mat": (1024, 200, 100, 50, 50), "AWA1_att_splits.mat": (85, 50, 27, 13, 10),
        "FLO_att_splits.mat": (1024, 102, 62, 20, 20), "SUN_att_splits.mat": (102, 717, 580, 65, 72)}


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
