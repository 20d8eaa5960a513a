"""The dataset schema: what `validate` refuses, each refusal naming the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from zsexp.data import (
    ZSLData,
    make_synthetic,
    validate,
)
from zsexp.errors import ZsexpError


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

