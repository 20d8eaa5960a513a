"""Nothing zsexp loads from sweep storage may run code: Tune's pickled state is signed, then verified.

**Threat model.**  The sweep storage (``$ZSEXP_HOME/sweeps`` or a shared ``--storage``) may be
writable by people other than the user who runs the sweep.  Ray Tune keeps part of a sweep's state as
pickles (``tuner.pkl``, ``searcher-state-*.pkl``, ``callback-states-*.pkl``, a trial's ``error.pkl``)
and as JSON that may embed pickles (``experiment_state-*.json``); unpickling runs code, so whoever
could replace one of those files could run code as the user who resumes, selects or inspects the sweep.
zsexp's own files are JSON, its checkpoints are loaded with ``weights_only``; they run nothing.

**Guarantee.**  While a sweep runs, its driver records the SHA-256 of every such file it (through Tune)
wrote, in ``zsexp_signatures.json`` in the sweep directory, authenticated with an HMAC under a per-user
key that lives outside the storage (``$ZSEXP_KEY_FILE``, default ``$ZSEXP_HOME/keys/sweep-state.key``,
mode 0600, created on first use).  Before Tune restores a sweep (``zsexp resume``) and before zsexp reads
Tune's state (``status``, ``select``), every file Tune would unpickle must carry a recorded digest, and
must not be writable by other users.  A planted or modified file is refused with one line naming it and
is never opened by a loader.  A file merely cut short by a kill (incomplete JSON, a pickle with no end)
is not loaded either: the resume takes the driver's local copy if it matches, else sets the cut snapshot
aside (see ``zsexp.search.recovery``).

Not covered: someone who can read the key file or write the user's ``$ZSEXP_HOME``; the instant between
Tune writing a snapshot and the driver recording it (the digests are taken from the driver's local
staging copy, the bytes this process wrote); MLflow's own artifact store (served models are pyfunc
pickles: trust the tracking server).  ``--trust-storage`` accepts a sweep signed by another user or
machine (or by a zsexp before signatures), after the user has checked it: its current files are then
signed with this user's key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickletools
import stat
from pathlib import Path

from zsexp.errors import ZsexpError
from zsexp.search.record import is_journal

SIGNATURES_FILE = "zsexp_signatures.json"
KEEP_DIGESTS = 32           # storage may still hold an earlier version while later ones are copied up
# zsexp's own files in a sweep directory: JSON or Optuna's JSON journal, read without unpickling
OWN_FILES = ("zsexp_sweep.json", "zsexp_progress.json", SIGNATURES_FILE, "optuna_journal.log",
             "optuna_journal.log.lock", "fault_worker_killed", "zsexp_rungs.jsonl")
SET_ASIDE = (".unreadable", ".tmp")

# What the driver signs at every controller step is mostly unchanged since the step before: a file's
# digest, the key and the record are remembered by (inode, size, mtime, ctime), so that an unchanged step
# costs a stat per file.  Only ``record`` uses them; ``check`` (before anything is loaded) always hashes.
_REMEMBERED: dict[str, tuple[tuple[int, int, int, int], object]] = {}


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _remembered(path: Path, kind: str, compute):
    stamp = _stamp(path)
    key = f"{kind}:{path}"
    hit = _REMEMBERED.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = compute(path)
    _REMEMBERED[key] = (stamp, value)
    return value


def own_file(name: str) -> bool:
    """zsexp's own files in a sweep directory (JSON, JSON lines, Optuna's journal): read without unpickling."""
    return name in OWN_FILES or is_journal(name)


def key_file() -> Path:
    from zsexp.paths import zsexp_home

    env = os.environ.get("ZSEXP_KEY_FILE")
    return Path(env).expanduser() if env else zsexp_home() / "keys" / "sweep-state.key"


KEY_VARIABLE = "ZSEXP_STATE_KEY"


def require_given_key() -> None:
    """A sweep kept in an object store is resumed, selected and shown from other machines, which must
    all verify it with the same key: it is given as a secret (``$ZSEXP_STATE_KEY``, or a mounted file named
    by ``$ZSEXP_KEY_FILE``), never made on the spot.  Refused in one line when absent or unusable."""
    if os.environ.get(KEY_VARIABLE) is None and not os.environ.get("ZSEXP_KEY_FILE"):
        raise ZsexpError(f"a sweep in an object store needs its signing key given as a secret: set ${KEY_VARIABLE} "
                         f"(at least 32 characters) or $ZSEXP_KEY_FILE (a file of mode 0600) on every machine "
                         f"that runs a zsexp command on it; nothing was written")
    if os.environ.get(KEY_VARIABLE) is None and not key_file().is_file():
        raise ZsexpError(f"$ZSEXP_KEY_FILE={key_file()}: no such file; nothing was written")
    state_key()


def state_key() -> bytes:
    """The signing key: ``$ZSEXP_STATE_KEY`` when set, else the per-user key file, created (0600, in a 0700
    folder) on first use."""
    given = os.environ.get(KEY_VARIABLE)
    if given is not None:
        key = given.strip().encode()
        if len(key) < 32 or len(key) > 4096:
            raise ZsexpError(f"${KEY_VARIABLE}: the sweep-state key must be 32 to 4096 characters (it has "
                             f"{len(key)})")
        return key
    path = key_file()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32).hex().encode())
        except FileExistsError:          # another zsexp process created it a moment ago
            pass
        except OSError as exc:
            raise ZsexpError(f"{path}: no sweep-state key, and none can be created ({exc.strerror or exc}); "
                             f"without it no sweep's state can be verified (set $ZSEXP_KEY_FILE to your key)") from None
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ZsexpError(f"{path}: the sweep-state key must belong to you and have mode 0600 (it has "
                         f"{stat.filemode(st.st_mode)}, owner uid {st.st_uid}); fix it with `chmod 600 {path}`")
    with open(path, "rb") as f:
        key = f.read(4097).strip()
    if len(key) > 4096:
        raise ZsexpError(f"{path}: longer than 4 KiB, not a sweep-state key; point $ZSEXP_KEY_FILE at your key")
    if len(key) < 32:
        raise ZsexpError(f"{path}: the sweep-state key is too short ({len(key)} bytes); delete it to make a new one "
                         f"(sweeps signed with it then need --trust-storage once)")
    return key


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mac(key: bytes, files: dict[str, list[str]]) -> str:
    return hmac.new(key, json.dumps(files, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def guarded_files(d: Path) -> list[Path]:
    """Every file in the sweep directory that Ray Tune may unpickle: its top-level state files (anything
    there that is not zsexp's own JSON) and the trials' pickled errors."""
    out = []
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        if p.is_file() and not own_file(p.name) and not p.name.endswith(SET_ASIDE) and not p.name.startswith("."):
            out.append(p)
    out.extend(sorted(d.glob("*/error.pkl")))
    return out


def _write_record(d: Path, key: bytes, files: dict[str, list[str]]) -> None:
    tmp = d / (SIGNATURES_FILE + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "files": files, "mac": _mac(key, files)}, sort_keys=True))
    path = d / SIGNATURES_FILE
    os.replace(tmp, path)
    from zsexp import workcopy

    workcopy.written(path)
    _REMEMBERED[f"record:{path}"] = (_stamp(path), {k: list(v) for k, v in files.items()})


def read_signatures(d: Path, key: bytes) -> dict[str, list[str]] | None:
    """The recorded digests, or None where the sweep has none; a tampered record is refused."""
    from zsexp.search.storage import MAX_OWN_JSON

    path = d / SIGNATURES_FILE
    if not path.is_file():
        return None
    try:
        if path.is_symlink() or path.stat().st_size > MAX_OWN_JSON:
            raise ValueError("not the record this sweep's driver wrote")
        rec = json.loads(path.read_text())
        files, mac = rec["files"], rec["mac"]
        ok = isinstance(files, dict) and all(isinstance(v, list) for v in files.values())
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok or not hmac.compare_digest(_mac(key, files), str(mac)):
        raise ZsexpError(f"{path}: the signature record is not one this user's zsexp wrote (modified, or signed "
                         f"with another key); if you trust this sweep's files, pass --trust-storage")
    return files


def record(d: Path, sources: dict[str, Path]) -> None:
    """Add the digests of ``sources`` (relative name in the sweep directory -> the file whose bytes this
    process wrote there) to the sweep's signature record.

    Tune copies its staging files to storage in the background and may copy a version written several
    steps ago, so the record keeps the last :data:`KEEP_DIGESTS` versions of each file, and never drops
    the version storage holds now while it is one this driver wrote (checked on every call)."""
    if not sources:
        return
    kf = key_file()
    key = (_remembered(kf, "key", lambda _: state_key()) if kf.is_file() and KEY_VARIABLE not in os.environ
           else state_key())
    try:
        files = _remembered(d / SIGNATURES_FILE, "record", lambda p: read_signatures(d, key) or {})
    except (OSError, ZsexpError):
        files = {}
    files = {k: list(v) for k, v in files.items()}
    changed = False
    for rel, src in sources.items():
        try:
            dig = _remembered(src, "digest", digest)
        except OSError:
            continue
        seen = files.setdefault(rel, [])
        stored = d / rel
        try:
            held = _remembered(stored, "digest", digest) if stored.is_file() and stored != src else None
        except OSError:               # replaced by Tune's copy at this moment
            held = None
        if dig in seen and (held is None or held not in seen or seen[-1] == dig):
            continue
        kept = [x for x in seen if x != dig][-(KEEP_DIGESTS - 1):] + [dig]
        if held in seen and held not in kept:          # storage still holds it: keep it verifiable
            kept = [held, *kept[1:]]
        if kept != seen:
            files[rel] = kept
            changed = True
    if changed:
        _write_record(d, key, files)


def incomplete(path: Path) -> bool:
    """True for a file cut short (a kill during Tune's copy): empty, JSON that does not parse, a pickle
    without its end.  Reads the opcodes only (``pickletools``): nothing is unpickled."""
    try:
        data = path.read_bytes()
    except OSError:
        return True
    if not data:
        return True
    if path.suffix == ".json":
        try:
            json.loads(data)
            return False
        except ValueError:
            return True
    try:
        for _ in pickletools.genops(data):
            pass
        return False
    except Exception:  # noqa: BLE001 - any parse failure means the stream is not whole
        return True


def unsafe_mode(path: Path) -> str | None:
    st = path.stat()
    if st.st_mode & 0o002:
        return f"is writable by every user ({stat.filemode(st.st_mode)})"
    if st.st_uid != os.getuid():
        return f"belongs to another user (uid {st.st_uid})"
    return None


def check(d: Path, files: list[Path] | None = None) -> list[Path]:
    """Refuse any guarded file of ``d`` that this user's driver did not write; returns the files that
    are merely incomplete (cut by a kill), for the caller to recover or set aside."""
    from zsexp import workcopy

    if workcopy.remote(d) is not None:
        require_given_key()
    key = state_key()
    files = guarded_files(d) if files is None else files
    if not files:
        return []
    sigs = read_signatures(d, key)
    if sigs is None:
        raise ZsexpError(f"{d}: Tune's state files are not signed (written by a zsexp before signatures, or copied "
                         f"in); zsexp will not load them unverified; if you trust them, pass --trust-storage")
    cut = []
    for p in files:
        why = unsafe_mode(p)
        if why:
            raise ZsexpError(f"{p} {why}: refused; anyone could have replaced it (fix the permissions, then pass "
                             f"--trust-storage if you trust its content)")
        rel = p.relative_to(d).as_posix()
        if digest(p) in sigs.get(rel, []):
            continue
        if incomplete(p):
            cut.append(p)
            continue
        raise ZsexpError(f"{p}: not written by this sweep's driver (its digest is not in {SIGNATURES_FILE}); refused "
                         f"and not loaded; if you trust it, pass --trust-storage")
    return cut


def trust(d: Path) -> None:
    """``--trust-storage``: sign the sweep's current files with this user's key."""
    from zsexp import workcopy

    if workcopy.remote(d) is not None:
        require_given_key()
    files = guarded_files(d)
    key = state_key()
    for p in files:
        why = unsafe_mode(p)
        if why:
            raise ZsexpError(f"--trust-storage: {p} {why}; fix the permissions first")
    _write_record(d, key, {p.relative_to(d).as_posix(): [digest(p)] for p in files})


def verified(d: Path, trust_storage: bool = False) -> None:
    """Before anything reads Tune's state of ``d`` without restoring it (status, select): every guarded
    file verified (or, with ``trust_storage``, re-signed); an incomplete file is refused too."""
    if trust_storage:
        trust(d)
    cut = check(d)
    if cut:
        raise ZsexpError(f"{cut[0]}: cut short (the sweep was killed while Tune saved it); run `zsexp resume "
                         f"{d.name}` first, which recovers or sets aside the cut snapshot")


def signed_digests(d: Path) -> dict[str, list[str]]:
    """The verified record of ``d`` ({} where it has none)."""
    return read_signatures(d, state_key()) or {}


def driver_staging_dir(experiment: str) -> Path | None:
    """Where this driver's Tune writes its snapshot before copying it to storage:
    ``<Ray session>/artifacts/<start time>/<experiment>/driver_artifacts`` of the current Ray session,
    the newest if a Tuner of that name ran before in this session.  (A restored trial's own storage
    context keeps the start time of the run that created it, so it cannot say.)"""
    import glob

    from zsexp.compat.ray_tune import train_session_dir  # Tune's own rule for this path

    found = glob.glob(str(Path(train_session_dir()) / "*" / experiment / "driver_artifacts"))
    return Path(max(found, key=os.path.getmtime)) if found else None


class SnapshotSigning:
    """The sweep callback's signing of Tune's state as Tune writes it (attributes set by its constructor:
    ``sweep``, ``sweep_dir``, ``_errored``, ``_signed_once``, ``_listing``)."""

    @staticmethod
    def drop_own_files_from_staging(staging: Path | None) -> None:
        """On restore Tune copies every top-level ``.json`` / ``.pkl`` of the sweep directory into its local
        staging directory and uploads that directory back at every step: zsexp's own files (metadata,
        durable record, signatures) would be put back as they were at the restore, over the newer
        ones this driver writes to storage.  They are taken out of the staging copy."""
        for name in OWN_FILES if staging else ():
            (staging / name).unlink(missing_ok=True)

    def sign_snapshot(self, trials) -> None:
        """Record the digests of the state Tune just wrote (its local staging copy: the bytes this driver
        wrote) so that a resume can tell them from planted files (``zsexp.search.integrity``)."""
        if not self.sweep_dir or not trials:
            return
        staging = driver_staging_dir(self.sweep)
        self.drop_own_files_from_staging(staging)
        sources = {p.name: p for p in self._state_files(staging)}
        # every trial once per session (errors restored from storage), then the ones failed or retried since
        # (a retried trial keeps the error.pkl of its failed attempt, whatever its status now)
        for t in self._errored if self._signed_once else trials:
            if t.pickled_error_file and Path(t.pickled_error_file).is_file():
                sources[f"{Path(t.storage.trial_fs_path).name}/error.pkl"] = Path(t.pickled_error_file)
        self._signed_once = True
        record(self.sweep_dir, sources)

    def _state_files(self, staging: Path | None) -> list[Path]:
        """Tune's top-level state files in its staging directory, which also holds a folder per trial: the
        directory is listed again only when its mtime moved (an entry added, removed or renamed), so a
        step costs a stat per state file, not one per trial."""
        try:
            stamp = (staging, staging.stat().st_mtime_ns) if staging else None
        except OSError:
            return []
        if stamp is None:
            return []
        if self._listing is None or self._listing[0] != stamp:
            with os.scandir(staging) as entries:
                names = [e.name for e in entries if e.name.endswith((".json", ".pkl"))
                         and not e.name.startswith("tmp-") and e.is_file(follow_symlinks=False)]
            self._listing = (stamp, names)
        return [staging / n for n in self._listing[1] if (staging / n).is_file()]
