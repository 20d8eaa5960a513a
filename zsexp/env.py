"""The environment is input too: every variable zsexp or its libraries read, checked before anything exists.

:func:`check_environment` runs first in every command (after ``--help``): garbage in one of the
variables below is one line naming the variable, its (cut) value and the rule, exit 2, with no
directory, study, run or Ray process created.  Unset variables take their documented defaults.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from zsexp.errors import ZsexpError

MAX_PATH = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:40] + "...")


def _path(must: str | None = None) -> Callable[[str, str], None]:
    """A file-system path; ``must``: 'dir' (an existing directory), 'dir-or-new' (a directory if it exists),
    'file-or-new' (a regular file if it exists)."""
    def check(name: str, value: str) -> None:
        if not value.strip():
            raise ZsexpError(f"${name} is set but empty; unset it or give a path")
        if len(value) > MAX_PATH or _CONTROL.search(value) or "://" in value:
            raise ZsexpError(f"${name}={_shown(value)}: not a file-system path")
        p = Path(value).expanduser()
        if must == "dir" and not p.is_dir():
            raise ZsexpError(f"${name}={_shown(value)}: no such directory")
        if must == "dir-or-new" and p.exists() and not p.is_dir():
            raise ZsexpError(f"${name}={_shown(value)}: exists and is not a directory")
        if must == "file-or-new" and p.exists() and not p.is_file():
            raise ZsexpError(f"${name}={_shown(value)}: exists and is not a regular file")
    return check


def _number(kind: type, lo: float, hi: float, words: tuple[str, ...] = (),
            many: bool = False) -> Callable[[str, str], None]:
    """A number of ``kind`` in [lo, hi] (or one of ``words``); ``many``: a comma-separated list of them
    (OpenMP's nested thread counts)."""
    def check(name: str, value: str) -> None:
        if value.strip().lower() in words:
            return
        for part in value.split(",") if many else [value]:
            try:
                x = kind(part.strip())
            except ValueError:
                x = None
            if x is None or not math.isfinite(x) or not lo <= x <= hi:
                extra = f" or {'/'.join(words)}" if words else ""
                raise ZsexpError(f"${name}={_shown(value)}: must be {'an integer' if kind is int else 'a number'} "
                                 f"between {lo:g} and {hi:g}{extra}")
    return check


def _token(name: str, value: str) -> None:
    if _CONTROL.search(value) or len(value) > MAX_PATH:
        raise ZsexpError(f"${name}: holds control characters or is too long; refused (its value is not shown)")


def _choice(*allowed: str) -> Callable[[str, str], None]:
    """One of ``allowed``, or empty (what compose passes for a variable it leaves unset)."""
    def check(name: str, value: str) -> None:
        if value.strip() and value.strip().lower() not in allowed:
            raise ZsexpError(f"${name}={_shown(value)}: must be one of {', '.join(allowed)}")
    return check


def _tracking_uri(name: str, value: str) -> None:
    from zsexp.tracking import TRACKING_SCHEMES, redact_uri

    if not value.strip() or _CONTROL.search(value) or " " in value.strip():
        raise ZsexpError(f"${name}={_shown(redact_uri(value))}: not a tracking URI")
    if "://" not in value and not value.startswith("sqlite:"):
        _path()(name, value)
        return
    scheme = value.split("://", 1)[0].split(":")[0].split("+")[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise ZsexpError(f"${name}={_shown(redact_uri(value))}: unsupported scheme {scheme!r} (use sqlite:///FILE, "
                         f"http(s)://HOST:PORT or a database URI)")


def _ray_address(name: str, value: str) -> None:
    v = value.strip()
    if v.lower() in ("auto", "local"):
        return
    m = re.fullmatch(r"(?:(ray|http|https)://)?([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?", v)
    if not m or (m.group(3) and not 0 < int(m.group(3)) < 65536) or (not m.group(1) and not m.group(3)):
        raise ZsexpError(f"${name}={_shown(value)}: not a Ray address (HOST:PORT, ray://HOST:PORT, auto)")


def _gpus_visible(name: str, value: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9,-]*", value.strip()):
        raise ZsexpError(f"${name}={_shown(value)}: must be a comma-separated list of GPU indices or UUIDs")


def _fault(name: str, value: str) -> None:
    """The fault-injection hooks of the kill tests (``zsexp.faults``): a known point and a count."""
    points = ("startup", "summary", "checkpoint_upload", "trial_complete", "trial_logged", "select_register",
              "ablate_run")
    point, _, nth = value.partition(":")
    if point not in points or (nth and not (nth.isdigit() and 1 <= int(nth) <= 1_000_000)):
        raise ZsexpError(f"${name}={_shown(value)}: must be POINT or POINT:N, POINT one of {', '.join(points)}")


_THREADS = _number(int, 1, 4096, many=True)
CHECKS: dict[str, Callable[[str, str], None]] = {
    "ZSEXP_HOME": _path("dir-or-new"),
    "ZSEXP_KEY_FILE": _path("file-or-new"),
    "ZSEXP_SEARCH_SPACES": _path("dir"),
    "ZSEXP_SIMULATE_GPUS": _number(int, 0, 1024),
    "ZSEXP_ROUND_LOG": _path("file-or-new"),
    "ZSEXP_FAULT_KILL": _fault,
    "ZSEXP_FAULT_KILL_WORKER": _number(int, 1, 1_000_000),
    "MLFLOW_TRACKING_URI": _tracking_uri,
    "MLFLOW_TRACKING_USERNAME": _token,
    "MLFLOW_TRACKING_PASSWORD": _token,
    "MLFLOW_TRACKING_TOKEN": _token,
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": _number(int, 0, 100),
    "MLFLOW_HTTP_REQUEST_TIMEOUT": _number(float, 1, 3600),
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": _number(float, 0, 60),
    "OMP_NUM_THREADS": _THREADS,
    "MKL_NUM_THREADS": _THREADS,
    "OPENBLAS_NUM_THREADS": _THREADS,
    "NUMEXPR_NUM_THREADS": _THREADS,
    "RAY_ADDRESS": _ray_address,
    "RAY_AUTH_MODE": _choice("token", "disabled"),
    "RAY_AUTH_TOKEN": _token,
    "RAY_TMPDIR": _path("dir-or-new"),
    "TUNE_GLOBAL_CHECKPOINT_S": _number(float, 0, 86_400, words=("auto",)),
    "TUNE_MAX_PENDING_TRIALS_PG": _number(int, 1, 1_000_000, words=("auto",)),
    "CUDA_VISIBLE_DEVICES": _gpus_visible,
}


def check_environment(environ: dict[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    for name, check in CHECKS.items():
        value = env.get(name)
        if value is not None:
            check(name, value)
