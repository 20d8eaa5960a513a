"""Datasets: one validated type (:class:`ZSLData`) from synthetic, xlsa17 and ``.npz`` sources."""

from __future__ import annotations

from pathlib import Path

from zsexp.data.conse import conse, conse_image_representations, seen_class_probabilities
from zsexp.data.mfeat import is_mfeat, load_mfeat
from zsexp.data.npz import load_npz, save_npz
from zsexp.data.schema import ZSLData, validate
from zsexp.data.synthetic import SPECS, make_synthetic
from zsexp.data.xlsa17 import load_xlsa17
from zsexp.errors import ZsexpError

__all__ = ["ZSLData", "validate", "load_dataset", "dataset_ref", "list_datasets", "make_synthetic", "load_npz",
           "save_npz", "load_xlsa17", "load_mfeat", "conse", "conse_image_representations", "seen_class_probabilities"]

_CACHE: dict[tuple[str, int], ZSLData] = {}


def list_datasets() -> list[dict]:
    out = []
    for name, spec in SPECS.items():
        n_cls = spec.n_train + spec.n_val + spec.n_test
        out.append({"name": name, "classes": n_cls,
                    "split": f"{spec.n_train}/{spec.n_val}/{spec.n_test}",
                    "dims": f"{spec.image_dim}/{spec.text_dim}"})
    return out


def dataset_ref(name_or_path: str) -> str:
    """The reference a Ray trial receives: a built-in name as it is, a path made absolute (a trial runs in
    its own working directory, where a relative path means nothing), keeping the UCI digits' ``:VIEWS``."""
    if name_or_path in SPECS:
        return name_or_path
    if "://" in name_or_path:                      # an object-store URI: every machine reads it from there
        _remote_parts(name_or_path)
        return name_or_path
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path.resolve())
    base, _, views = name_or_path.rpartition(":")
    if base and Path(base).expanduser().exists():
        return f"{Path(base).expanduser().resolve()}:{views}"
    return name_or_path


def _remote_parts(ref: str) -> tuple[str, str]:
    """(URI, UCI digits views or "") of a dataset URI (``s3://b/p/mfeat:fou-pix`` names the views)."""
    from zsexp import objectstore

    base, sep, views = ref.rpartition(":")
    if sep and "/" not in views and base.count("://") == 1:
        objectstore.parse(base, "dataset")
        return base, views
    objectstore.parse(ref, "dataset")
    return ref, ""


def load_dataset(name_or_path: str, seed: int = 0) -> ZSLData:
    """A built-in synthetic name, an xlsa17 directory, a ``.npz`` file, or the UCI digits directory
    (``DIR`` or ``DIR:TEXT-IMAGE`` views; ``seed`` draws its class split, see :mod:`zsexp.data.mfeat`)."""
    if name_or_path in SPECS:
        key = (name_or_path, seed)
        if key not in _CACHE:
            _CACHE[key] = make_synthetic(name_or_path, seed=seed)
        return _CACHE[key]
    if "://" in name_or_path:
        uri, views = _remote_parts(name_or_path)
        from zsexp.data.remote import fetch

        local = str(fetch(uri))
        return load_dataset(f"{local}:{views}" if views else local, seed=seed)
    path = Path(name_or_path).expanduser()
    base, _, views = name_or_path.rpartition(":")
    if base and not path.exists() and is_mfeat(Path(base).expanduser()):
        return load_mfeat(Path(base).expanduser(), seed=seed, views=views)
    if path.is_dir() and is_mfeat(path):
        return load_mfeat(path, seed=seed)
    if path.is_dir():
        return load_xlsa17(path)
    if path.suffix == ".npz":
        return load_npz(path)
    if not path.exists():
        raise ZsexpError(f"dataset {name_or_path!r} not found: not a built-in name ({', '.join(SPECS)}), "
                         f"nor an existing xlsa17 directory, UCI digits directory or .npz file")
    raise ZsexpError(f"dataset {name_or_path!r}: unsupported file type {path.suffix!r}; "
                     f"give an xlsa17 directory or a .npz file")
