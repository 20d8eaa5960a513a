"""Where zsexp keeps its state: ``ZSEXP_HOME`` (default ``~/.zsexp``)."""

from __future__ import annotations

import os
from pathlib import Path


def zsexp_home() -> Path:
    """``$ZSEXP_HOME``, not made here: a command makes it where it first writes, after every check, so a
    refused or read-only command leaves no empty folder behind."""
    return Path(os.environ.get("ZSEXP_HOME", Path.home() / ".zsexp")).expanduser()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file under ``ZSEXP_HOME``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{zsexp_home() / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return zsexp_home() / "mlartifacts"


def default_runs_dir() -> Path:
    return zsexp_home() / "runs"


MIN_FREE_BYTES = 64 << 20       # a command that writes needs at least this much free space where it writes


def check_writable(path: Path, what: str) -> None:
    """Refuse, before any work, a place zsexp is about to write that cannot take it: not a directory, a
    read-only mount, no permission, or under :data:`MIN_FREE_BYTES` free.  ``path`` may not exist yet: its
    nearest existing ancestor is probed (a real probe: permission bits say nothing to root); the probe
    leaves no trace."""
    import shutil
    import tempfile

    from zsexp.errors import ZsexpError

    probe = Path(path)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ZsexpError(f"{what} {path}: {probe} is not a directory")
    st = probe.stat()
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".zsexp-probe-", dir=probe))
    except OSError as exc:
        raise ZsexpError(f"{what} {path}: cannot write in {probe} ({exc.strerror or exc}); nothing was "
                         f"started") from None
    finally:
        try:
            os.utime(probe, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass
    free = shutil.disk_usage(probe).free
    if free < MIN_FREE_BYTES:
        raise ZsexpError(f"{what} {path}: only {free >> 20} MiB free on its file system (at least "
                         f"{MIN_FREE_BYTES >> 20} MiB needed); nothing was started")
