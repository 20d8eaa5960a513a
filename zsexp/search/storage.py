"""Where a sweep is stored and how it is described: the sweeps root, a sweep's directory and metadata.

Layout on Ray's storage (``--storage``, default ``$ZSEXP_HOME/sweeps``)::

    <storage>/<name>/                    Tune's experiment directory (trials, checkpoints, searcher state)
    <storage>/<name>/zsexp_sweep.json    what zsexp needs to resume: model, dataset, space, MLflow ids
    <storage>/<name>/zsexp_progress.json the driver's durable record (``zsexp.search.callback``)
    <storage>/.<name>.lock               held while a command writes the sweep (``zsexp.search.lock``)

A sweep's directory is always ``<root>/<checked name>``: paths stored in its files are never used.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from zsexp.errors import ZsexpError
from zsexp.names import check_name
from zsexp.paths import zsexp_home
from zsexp.search.meta import SweepMeta

SWEEP_FILE = "zsexp_sweep.json"
CALLBACK_FILE = "zsexp_progress.json"


def default_storage() -> Path:
    return zsexp_home() / "sweeps"


def sweeps_root(storage: str | None) -> Path:
    """The directory holding the sweeps (``--storage``, default ``$ZSEXP_HOME/sweeps``)."""
    if storage is not None and not str(storage).strip():
        raise ZsexpError("--storage must not be empty")
    base = storage or str(default_storage())
    if "://" in base:
        raise ZsexpError("zsexp keeps sweep metadata beside Tune's: --storage must be a (shared) file system path")
    return Path(base).expanduser().resolve()


def check_writable_root(root: Path) -> None:
    """Refuse a sweeps root that cannot be created or written, before anything is written."""
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ZsexpError(f"--storage {root}: {probe} is not a directory")
    st = probe.stat()
    try:               # a real probe (permission bits say nothing to root, or of /proc); its traces are undone
        os.rmdir(tempfile.mkdtemp(prefix=".zsexp-probe-", dir=probe))
    except OSError as exc:
        raise ZsexpError(f"--storage {root}: cannot write in {probe} ({exc.strerror or exc})") from None
    finally:
        try:
            os.utime(probe, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass


def sweep_dir(name: str, storage: str | None) -> Path:
    """``<root>/<name>`` for a checked name; a directory that resolves outside the root (a planted link)
    is refused."""
    root = sweeps_root(storage)
    d = root / check_name(name)
    if d.is_symlink() or (d.exists() and d.resolve().parent != root):
        raise ZsexpError(f"{d} is a link out of the sweeps root {root}; refused")
    return d


def sweep_names(storage: str | None) -> list[str]:
    """The sweeps under ``storage`` (directories holding a sweep file), sorted by name."""
    return sorted(p.parent.name for p in sweeps_root(storage).glob(f"*/{SWEEP_FILE}"))


def read_meta(name: str, storage: str | None) -> SweepMeta:
    """The sweep's metadata, checked: a corrupt or edited file is one clear error.  Its directory is
    where it was found, never a path read from the file (``dir`` and ``trial_meta.sweep_dir`` are set
    from it), so no stored path can point zsexp outside the sweep."""
    d = sweep_dir(name, storage)
    path = d / SWEEP_FILE
    if not path.is_file():
        known = sweep_names(storage)
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise ZsexpError(f"no sweep {name!r} under {d.parent} (known: {shown or 'none'}); "
                         f"pass --storage if it lives elsewhere")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZsexpError(f"{path}: unreadable sweep metadata ({type(exc).__name__}: {str(exc)[:120]})") from None
    meta = SweepMeta.from_json(raw, str(path), str(d))
    if meta.name != name:
        raise ZsexpError(f"{path}: it describes sweep {meta.name!r}, not {name!r}; the file was moved or edited")
    from zsexp.models import MODELS

    if meta.model not in MODELS:
        raise ZsexpError(f"{path}: unknown model {meta.model!r}")
    return meta


def write_json_atomic(path: str | Path, data: Any, **dumps: Any) -> None:
    """Write JSON so that a reader (or a kill) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str, **dumps))
    os.replace(tmp, path)


def read_progress(sweep_dir: str | Path) -> dict[str, Any]:
    """The driver callback's mirrored state (runs, outcomes, best values, peak), or {} before the first trial."""
    pf = Path(sweep_dir) / CALLBACK_FILE
    return json.loads(pf.read_text()) if pf.is_file() else {}


