"""A command's local working copy of a sweep (or ablation) kept in an object store.

zsexp's code reads and writes a sweep as a folder of small files (metadata, the durable record, finish
markers, rungs, signatures, Optuna's journal, results).  On an object store the folder is a working copy:

* it lives in a fresh temporary folder of this process (:func:`root_for`), removed when the process ends,
  so two commands on one machine never share one and no machine keeps state between commands;
* :func:`pull` fills it from the store (every object of the sweep except what is inside Tune's trial
  folders, of which only a trial's ``error.pkl`` is taken: checkpoints stay in the store, where Tune and
  the trials read them);
* every file zsexp writes in it is uploaded at once, before the write returns (:func:`written`: the
  durable record, markers, the journal of the study, the rungs), so the store is never behind what the
  MLflow store shows, as on a local file system;
* :func:`push` uploads whatever else changed and removes from the store what was removed from the copy
  (a cut snapshot set aside, the files of a restart), at the points where the commands call it and when
  the writer's lease is given back.

Nothing in the store is trusted more than a local file: object names become local paths only as plain
segments (no ``..``, no separator), the copy is bounded in size, and everything read from it is then
checked by the same code as a local sweep (signatures, sizes, JSON).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zsexp import objectstore as store
from zsexp.errors import ZsexpError

MAX_PULL = 2 << 30                  # a working copy holds at most this much (checkpoints are never pulled)
RECORD_FIRST = ("zsexp_trials",)
RECORD_LAST = ("zsexp_progress", "zsexp_sweep.json")     # uploaded after everything they describe

_ROOTS: dict[Path, store.Location] = {}           # local working root -> its place in the store
_STAMPS: dict[Path, dict[str, tuple[int, int]]] = {}   # root -> {relative path: (size, mtime) in the store}
_GUARDS: dict[Path, Callable[[], None]] = {}      # a folder whose writes need a held lease -> its check
_TAGS: dict[Path, dict[str, str]] = {}           # root -> {relative path: the store's ETag when pulled}
_LOCK = threading.RLock()


def root_for(loc: store.Location) -> Path:
    """This process's working root for the store location ``loc`` (made once, removed at exit)."""
    with _LOCK:
        for root, where in _ROOTS.items():
            if where == loc:
                return root
        base = os.environ.get("ZSEXP_WORK_DIR") or None
        root = Path(tempfile.mkdtemp(prefix="zsexp-copy-", dir=base)).resolve()
        _ROOTS[root] = loc
        _STAMPS[root] = {}
        atexit.register(shutil.rmtree, root, True)
        return root


def location_of(path: str | Path) -> tuple[Path, store.Location, str] | None:
    """(working root, its store location, the path relative to it) for a path inside a working copy."""
    if not _ROOTS:
        return None
    p = Path(path)
    for parent in (p, *p.parents):
        if parent in _ROOTS:
            return parent, _ROOTS[parent], p.relative_to(parent).as_posix()
    return None


def remote(path: str | Path) -> store.Location | None:
    """The store location a working-copy folder stands for (None for a plain local path)."""
    found = location_of(path)
    return None if found is None else found[1].child(found[2]) if found[2] != "." else found[1]


def guard(folder: Path, check: Callable[[], None] | None) -> None:
    """Writes under ``folder`` call ``check`` first (a lease that must still be held); None removes it."""
    with _LOCK:
        if check is None:
            _GUARDS.pop(Path(folder), None)
        else:
            _GUARDS[Path(folder)] = check


def _check_guard(path: Path) -> None:
    for parent in path.parents:
        check = _GUARDS.get(parent)
        if check is not None:
            check()
            return


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def written(path: str | Path) -> None:
    """``path`` (a file zsexp just wrote) is uploaded now when it belongs to a working copy."""
    found = location_of(path)
    if found is None:
        return
    root, loc, rel = found
    p = Path(path)
    with _LOCK:
        _check_guard(p)
        try:
            stamp = _stamp(p)
        except FileNotFoundError:
            return
        if _STAMPS[root].get(rel) == stamp:
            return
        store.put_file(loc, rel, str(p))
        _STAMPS[root][rel] = stamp


def removed(path: str | Path) -> None:
    found = location_of(path)
    if found is None:
        return
    root, loc, rel = found
    with _LOCK:
        _check_guard(Path(path))
        store.delete(loc, rel)
        _STAMPS[root].pop(rel, None)


def _wanted(rel: str) -> bool:
    """A sweep's own objects; inside a Tune trial folder only its pickled error (signed, checked)."""
    parts = rel.split("/")
    if len(parts) == 1:
        return True
    if parts[0] in ("zsexp_trials",) or parts[0].startswith("selection-"):
        return True
    return len(parts) == 2 and parts[1] == "error.pkl"


def pull(folder: Path) -> int:
    """Make the working-copy ``folder`` what the store holds: a file pulled before and unchanged on both
    sides (same ETag, same size and time) is kept, every other one dropped and fetched; the number of
    objects fetched.  A name that could not be a plain relative path is refused, and so is a copy over
    :data:`MAX_PULL` bytes."""
    found = location_of(folder)
    if found is None or Path(folder) in _GUARDS:       # this process holds its lease: the copy is current
        return 0
    if any(g in Path(folder).parents for g in _GUARDS):
        push(folder)                 # a part of this writer's copy: what it wrote goes up before it is refreshed
    root, loc, rel = found
    here = loc.child(rel)
    listed = [(r, n, e, t) for r, n, e, t in store.listing(here) if _wanted(r)]
    bad = [r for r, _, _, _ in listed if not store.plain_relative(r)]
    if bad:
        raise ZsexpError(f"{here.uri}/{bad[0][:200]}: not a name zsexp or Tune writes; refused (nothing was read)")
    total = sum(n for _, n, _, _ in listed)
    if total > MAX_PULL:
        raise ZsexpError(f"{here.uri}: {total >> 20} MiB of state outside the checkpoints (at most "
                         f"{MAX_PULL >> 20} MiB); not a sweep zsexp wrote: refused")
    prefix = "" if rel == "." else rel + "/"
    tags, stamps = _TAGS.setdefault(root, {}), _STAMPS[root]
    keep = {r for r, _, etag, _ in listed if tags.get(prefix + r) == etag and (folder / r).is_file()
            and stamps.get(prefix + r) == _stamp(folder / r)}        # pulled before, unchanged on both sides
    for dirpath, _, files in os.walk(folder) if folder.is_dir() else ():
        for f in files:
            if Path(dirpath, f).relative_to(folder).as_posix() not in keep:
                os.unlink(Path(dirpath, f))
    folder.mkdir(parents=True, exist_ok=True)
    objects = [(r, n, t) for r, n, _, t in listed if r not in keep]

    def fetch(item: tuple[str, int, float]) -> tuple[str, tuple[int, int]]:
        r, _, when = item
        data = store.get(here, r, limit=MAX_PULL)
        target = folder / r
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data or b"")
        os.utime(target, (when, when))          # the store's time: "the newest" means the same in a copy
        return f"{rel}/{r}" if rel != "." else r, _stamp(target)

    with cf.ThreadPoolExecutor(8) as pool:
        fresh = dict(pool.map(fetch, objects))
    with _LOCK:
        kept = {prefix + r: _STAMPS[root][prefix + r] for r in keep}
        _STAMPS[root] = {k: v for k, v in _STAMPS[root].items() if not k.startswith(prefix)} | kept | fresh
        tags.update({prefix + r: etag for r, _, etag, _ in listed})
    return len(objects)


def _order(rel: str) -> int:
    name = rel.rsplit("/", 1)[-1]
    return 2 if name.startswith(RECORD_LAST) else 0


def push(folder: Path) -> None:
    """Upload what changed in the working-copy ``folder`` since it was pulled or last uploaded (the
    durable record last) and remove from the store what was removed from the copy."""
    found = location_of(folder)
    if found is None:
        return
    root, loc, rel = found
    prefix = "" if rel == "." else rel + "/"
    with _LOCK:
        _check_guard(folder / "x")
        present: dict[str, Path] = {}
        for dirpath, _, files in os.walk(folder):
            for f in files:
                p = Path(dirpath) / f
                if not f.endswith(".tmp"):
                    present[p.relative_to(root).as_posix()] = p
        stamps = _STAMPS[root]
        changed = sorted((r for r, p in present.items() if stamps.get(r) != _stamp(p)), key=_order)
        for r in changed:
            store.put_file(loc, r, str(present[r]))
            stamps[r] = _stamp(present[r])
        for r in [r for r in stamps if r.startswith(prefix) and r not in present]:
            store.delete(loc, r)
            stamps.pop(r, None)


def refresh(folder: Path) -> int:
    """Download what others (trials on other machines) added under the working-copy ``folder`` since it
    was pulled; nothing of the copy is dropped or overwritten.  The number of objects taken."""
    found = location_of(folder)
    if found is None:
        return 0
    root, loc, rel = found
    prefix = "" if rel == "." else rel + "/"
    here = loc.child(rel)
    new = [r for r, _, _, _ in store.listing(here) if _wanted(r) and store.plain_relative(r)
           and f"{prefix}{r}" not in _STAMPS[root] and not (Path(folder) / r).exists()]
    for r in new:
        fetch(Path(folder) / r)
    return len(new)


def fetch(path: str | Path) -> bool:
    """Download one file of a working copy from the store (one Tune wrote there itself); False if absent."""
    found = location_of(path)
    if found is None:
        return False
    root, loc, rel = found
    data = store.get(loc, rel)
    if data is None:
        return False
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    with _LOCK:
        _STAMPS[root][rel] = _stamp(Path(path))
    return True


def forget(folder: Path) -> None:
    """Drop a working-copy folder (the store keeps everything)."""
    found = location_of(folder)
    if found is not None:
        shutil.rmtree(folder, ignore_errors=True)
        root, _, rel = found
        with _LOCK:
            prefix = "" if rel == "." else rel + "/"
            _STAMPS[root] = {k: v for k, v in _STAMPS[root].items() if not k.startswith(prefix)}


def as_uris(text: str) -> str:
    """``text`` with every working-copy folder named by its store URI (messages name what the user gave)."""
    for root, loc in list(_ROOTS.items()):
        text = text.replace(str(root), loc.uri)
    return text


def describe(path: Any) -> str:
    """How a path is shown to the user: its store URI inside a working copy, else the path itself."""
    loc = remote(path)
    return loc.uri if loc is not None else str(path)
