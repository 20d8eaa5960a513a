"""Where a sweep is stored and how it is described: the sweeps root, a sweep's directory and metadata.

Layout on Ray's storage (``--storage``, default ``$ZSEXP_HOME/sweeps``)::

    <storage>/<name>/                    Tune's experiment directory (trials, checkpoints, searcher state)
    <storage>/<name>/zsexp_sweep.json    what zsexp needs to resume: model, dataset, space, MLflow ids
    <storage>/<name>/zsexp_progress.json the driver's durable record (``zsexp.search.callback``)
    <storage>/.<name>.lock               held while a command writes the sweep (``zsexp.search.lock``)

A sweep's directory is always ``<root>/<checked name>``: paths stored in its files are never used.

``--storage`` may also be an object-store URI (``s3://BUCKET/PREFIX``): the same layout is then kept
under that prefix, and a command works on a local working copy of it (``zsexp.workcopy``), taken from
the store when a sweep is read and written back to it as the command writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zsexp import objectstore, workcopy
from zsexp.errors import ZsexpError
from zsexp.meta import SweepMeta
from zsexp.names import check_name
from zsexp.paths import zsexp_home

SWEEP_FILE = "zsexp_sweep.json"
CALLBACK_FILE = "zsexp_progress.json"


def default_storage(kind: str = "sweeps") -> Path | str:
    """Where ``kind`` (sweeps, ablations) live without ``--storage``: ``$ZSEXP_STATE_URI/KIND`` when that
    is set (a cluster whose nodes keep their state in an object store, ``s3://BUCKET/PREFIX``), else
    ``$ZSEXP_HOME/KIND``."""
    state = os.environ.get("ZSEXP_STATE_URI", "").strip()
    if state:
        return f"{state.rstrip('/')}/{kind}"
    return zsexp_home() / kind


def storage_root(storage: str | None, default: Path | str) -> Path:
    """A directory of named jobs: ``--storage`` (a file system path, or an ``s3://`` URI whose local
    working copy is returned), else ``default``."""
    if storage is not None and not str(storage).strip():
        raise ZsexpError("--storage must not be empty")
    base = storage or str(default)
    if objectstore.is_uri(base):
        return workcopy.root_for(objectstore.parse(base, "--storage" if storage else "$ZSEXP_STATE_URI"))
    return Path(base).expanduser().resolve()


def sweeps_root(storage: str | None) -> Path:
    """The directory holding the sweeps (``--storage``, default :func:`default_storage`)."""
    return storage_root(storage, default_storage())


def check_writable_root(root: Path) -> None:
    """Refuse a sweeps root that cannot be created or written, before anything is written (on an object
    store: reachable, credentials accepted, the bucket there, a write allowed)."""
    from zsexp.paths import check_writable

    loc = workcopy.remote(root)
    if loc is not None:
        objectstore.check(loc, write=True)
        return
    check_writable(root, "--storage")


def tune_storage(d: Path) -> tuple[str, object | None]:
    """``(storage_path, storage_filesystem)`` for Ray Tune's ``RunConfig`` / ``Tuner.restore`` of the
    sweep directory ``d``'s root: the local root, or the object-store prefix with pyarrow's S3 file system."""
    loc = workcopy.remote(d.parent)
    if loc is None:
        return str(d.parent), None
    return loc.arrow_path(), objectstore.arrow_fs()


def named_dir(root: Path, name: str, what: str = "sweep name", kind: str = "sweeps") -> Path:
    """``<root>/<name>`` for a checked name; a directory that resolves outside the root (a planted link)
    is refused."""
    d = root / check_name(name, what)
    if d.is_symlink() or (d.exists() and d.resolve().parent != root):
        raise ZsexpError(f"{d} is a link out of the {kind} root {root}; refused")
    return d


def sweep_dir(name: str, storage: str | None) -> Path:
    return named_dir(sweeps_root(storage), name)


def own_regular_file(d: Path, rel: str) -> Path | None:
    """``d/rel`` when it is a regular file of the sweep directory ``d`` (None when absent).  A symbolic
    link (even one pointing inside), a path that resolves outside ``d``, or anything not a regular file
    (a directory, a FIFO, a device) is refused: zsexp reads only a sweep's own files."""
    path = d / rel
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ZsexpError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    import stat as stat_

    if stat_.S_ISLNK(st.st_mode):
        raise ZsexpError(f"{path} is a symbolic link; a sweep's files must be its own regular files: refused")
    if not stat_.S_ISREG(st.st_mode):
        raise ZsexpError(f"{path} is not a regular file; refused")
    if path.resolve().parent != d.resolve() / Path(rel).parent:
        raise ZsexpError(f"{path} resolves outside the sweep directory {d}; refused")
    return path


def check_key_folder(d: Path | None = None) -> None:
    """The signing key's folder can be written (a new key is made there with the sweep's first signature);
    for a sweep on an object store the key must be given (it is needed on every machine that resumes it)."""
    from zsexp.search.integrity import key_file, require_given_key

    if d is not None and workcopy.remote(d) is not None:
        require_given_key()
        return
    if not key_file().exists():
        from zsexp.paths import check_writable

        check_writable(key_file().parent, "signing key folder")


def refuse_existing(d: Path, name: str) -> None:
    """A new sweep's place is free: no sweep there, and (in an object store) nothing else either."""
    loc = workcopy.remote(d)
    exists = objectstore.head(loc, SWEEP_FILE) is not None if loc is not None else (d / SWEEP_FILE).exists()
    if exists:
        raise ZsexpError(f"sweep {name!r} already exists at {workcopy.describe(d)}; continue it with `zsexp resume "
                         f"{name}` or choose another --name")
    if loc is not None and not objectstore.is_empty(loc):
        raise ZsexpError(f"{loc.uri} holds objects but no zsexp sweep; refused (choose another --name or "
                         f"--storage prefix)")


def check_writable_state(d: Path) -> None:
    """Where a command that runs a sweep's trials writes, checked before it starts: the sweep directory
    (Tune's files, checkpoints, the record), its storage root (the writer lock) and the signing key's
    folder when the key does not exist yet."""
    from zsexp.paths import check_writable
    from zsexp.search.integrity import key_file, require_given_key

    loc = workcopy.remote(d)
    if loc is not None:                      # the store takes the writes; the key must be given
        objectstore.check(loc, write=True)
        require_given_key()
        return
    check_writable(d, "sweep")
    check_writable(d.parent, "sweep storage")
    if not key_file().exists():
        check_writable(key_file().parent, "signing key folder")


def sweep_names(storage: str | None) -> list[str]:
    """The sweeps under ``storage`` (directories holding a sweep file), sorted by name."""
    loc = workcopy.remote(sweeps_root(storage))
    if loc is not None:
        names = [n for n in objectstore.folders(loc) if _is_name(n)]
        return [n for n in names if objectstore.head(loc.child(n), SWEEP_FILE) is not None]
    return sorted(p.parent.name for p in sweeps_root(storage).glob(f"*/{SWEEP_FILE}"))


def _is_name(name: str) -> bool:
    try:
        check_name(name)
        return True
    except ZsexpError:
        return False


MAX_OWN_JSON = 256 << 20      # a sweep's own JSON files (metadata, progress record, signatures), at most


def check_sweep_files(d: Path) -> None:
    """Every entry zsexp or Tune reads in the sweep directory ``d`` -- its files, the trial markers, each
    trial directory's entries -- is the sweep's own: a symbolic link (wherever it points) or a special
    file (FIFO, socket, device) is refused in one line before anything is read, written or started."""
    import stat as stat_

    def scan(folder: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise ZsexpError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
        for e in entries:
            mode = e.stat(follow_symlinks=False).st_mode
            if stat_.S_ISLNK(mode):
                raise ZsexpError(f"{e.path} is a symbolic link; a sweep's files must be its own regular files: "
                                 f"refused (nothing was read or written)")
            if stat_.S_ISDIR(mode):
                if depth < 1:
                    scan(Path(e.path), depth + 1)
            elif not stat_.S_ISREG(mode):
                raise ZsexpError(f"{e.path} is not a regular file; refused (nothing was read or written)")

    scan(d, 0)


def read_own_json(d: Path, rel: str, default: Any = None) -> Any:
    """A JSON file of the sweep's own (:func:`own_regular_file`), at most :data:`MAX_OWN_JSON` bytes."""
    path = own_regular_file(d, rel)
    if path is None:
        return default
    if path.stat().st_size > MAX_OWN_JSON:
        raise ZsexpError(f"{path}: larger than {MAX_OWN_JSON >> 20} MiB; not a file zsexp wrote: refused")
    try:
        return json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZsexpError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:120]})") from None


def read_meta(name: str, storage: str | None) -> SweepMeta:
    """The sweep's metadata, checked: a corrupt or edited file is one clear error.  Its directory is
    where it was found, never a path read from the file (``dir`` and ``trial_meta.sweep_dir`` are set
    from it), so no stored path can point zsexp outside the sweep."""
    d = sweep_dir(name, storage)
    workcopy.pull(d)                   # on an object store: the sweep as the store holds it now
    path = own_regular_file(d, SWEEP_FILE) if d.is_dir() else None
    if path is None:
        known = sweep_names(storage)
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise ZsexpError(f"no sweep {name!r} under {workcopy.describe(d.parent)} (known: {shown or 'none'}); "
                         f"pass --storage if it lives elsewhere")
    check_sweep_files(d)
    try:
        raw = read_own_json(d, SWEEP_FILE)
    except ZsexpError as exc:
        raise ZsexpError(str(exc).replace(": unreadable (", ": unreadable sweep metadata (", 1)) from None
    meta = SweepMeta.from_json(raw, str(path), str(d))
    if meta.name != name:
        raise ZsexpError(f"{path}: it describes sweep {meta.name!r}, not {name!r}; the file was moved or edited")
    from zsexp.names import MODEL_NAMES

    if meta.model not in MODEL_NAMES:
        raise ZsexpError(f"{path}: unknown model {meta.model!r}")
    return meta


def write_json_atomic(path: str | Path, data: Any, **dumps: Any) -> None:
    """Write JSON so that a reader (or a kill) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str, **dumps))
    os.replace(tmp, path)
    workcopy.written(path)             # in a working copy of an object store: uploaded before returning


def snapshot_trials(sweep_dir: str | Path) -> list[dict[str, Any]] | None:
    """Every trial of Tune's newest snapshot as plain JSON (id, status, config, last result), in Tune's
    order; None where there is no snapshot.  Read as JSON, without Tune's loader: nothing is unpickled
    and no trial directory is opened, so it costs one file read whatever the sweep's size."""
    states = sorted(Path(sweep_dir).glob("experiment_state-*.json"))
    if not states:
        return None
    out = []
    for trial_json, meta_json in json.loads(states[-1].read_text()).get("trial_data", []):
        t, m = json.loads(trial_json), json.loads(meta_json)
        last = m.get("last_result")
        out.append({"trial_id": t["trial_id"], "status": t.get("status"), "config": t.get("config") or {},
                    "last_result": last if isinstance(last, dict) else {}})
    return out
