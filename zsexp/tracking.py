"""MLflow: experiment and run naming, tags, client set-up and helpers (no Ray import here).

The sweep's Tune callback that writes the child runs lives in ``zsexp.search.callback``.

A sweep is one MLflow *parent* run; each Tune trial is a *child* run (``mlflow.parentRunId``),
tagged with the sweep name and trial id.  The child of a trial is found by those tags before one
is created, so a resumed sweep re-attaches to its runs and never duplicates them, even when the
driver died before Tune saved this callback's state.  Metric names are MLflow-safe ('@' -> '_at_',
'/' -> '_'), identical across trials so that the MLflow UI's compare view lines them up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zsexp.errors import ZsexpError
from zsexp.paths import default_artifact_root, default_tracking_uri
from zsexp.tags import EXPERIMENT_KIND, TAG_SWEEP, TAG_TRIAL


def safe_name(key: str) -> str:
    return key.replace("@", "_at_").replace("/", "_")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def redact_uri(uri: str) -> str:
    """``http://user:pass@host`` -> ``http://host``: credentials never reach metadata, tags or logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme.startswith("http") and (parts.username or parts.password):
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def credentials_from_uri(uri: str) -> str:
    """Move credentials embedded in an HTTP URI into MLflow's own variables; return the bare URI."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    if parts.scheme.startswith("http") and parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
        if parts.password:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return redact_uri(uri)


TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
CONNECT_TIMEOUT_S = 10


def check_tracking_uri(uri: str, writes: bool = True) -> None:
    """Refuse a tracking URI that cannot work, without creating anything: an unknown scheme, a SQLite
    file whose folder is missing or read-only, a server that does not accept a connection within
    :data:`CONNECT_TIMEOUT_S` (the full check, credentials included, is :func:`client`)."""
    import socket
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme.split("+")[0] if "://" in uri or uri.startswith("sqlite:") else "file"
    if scheme not in TRACKING_SCHEMES:
        raise ZsexpError(f"tracking URI {redact_uri(uri)!r}: unsupported scheme {scheme!r} (use sqlite:///FILE, "
                         f"http(s)://HOST:PORT or a database URI)")
    if scheme == "sqlite":
        path = sqlite_file(uri)
        if path is not None and not path.parent.is_dir() and not (writes and _is_home(path.parent)):
            raise ZsexpError(f"tracking URI {uri}: folder {path.parent} is missing" +
                             (" (no MLflow store there yet)" if _is_home(path.parent) else " or not writable"))
        if path is not None and writes:                # $ZSEXP_HOME, if missing, is made when the store is
            from zsexp.paths import check_writable

            check_writable(path.parent, f"tracking URI {uri}:")
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise ZsexpError(f"tracking URI {redact_uri(uri)!r}: bad port") from None
        if not parts.hostname:
            raise ZsexpError(f"tracking URI {redact_uri(uri)!r}: no host")
        try:
            socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise ZsexpError(f"cannot reach the MLflow tracking server {redact_uri(uri)}: a connection to "
                             f"{parts.hostname}:{port} failed within {CONNECT_TIMEOUT_S}s "
                             f"({exc.strerror or exc})") from None


def client(tracking_uri: str | None = None, create: bool = True):
    """An MlflowClient on ``tracking_uri`` (default: $MLFLOW_TRACKING_URI or SQLite under ZSEXP_HOME),
    checked to be reachable: an unreachable server is one clear error within about 30 s, not minutes
    of retries.  ``create=False`` (commands that only read or move registry entries): a SQLite store
    that does not exist yet is an error, not a new empty store."""
    import logging

    import mlflow
    from mlflow.tracking import MlflowClient

    for name in ("mlflow.store.db.utils", "alembic"):   # "Creating initial MLflow database tables..." on stderr
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = credentials_from_uri(tracking_uri or default_tracking_uri())
    check_tracking_uri(uri, writes=create)
    if not create and sqlite_file(uri) is not None and not sqlite_file(uri).is_file():
        raise ZsexpError(f"no MLflow store at {uri[len('sqlite:///'):]} yet (run a sweep first, or pass "
                         f"--tracking-uri)")
    if create and sqlite_folder_missing(uri):
        sqlite_file(uri).parent.mkdir(parents=True, exist_ok=True)     # $ZSEXP_HOME, checked writable above
    if uri.startswith("http"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    try:
        mlflow.set_tracking_uri(uri)
        c = MlflowClient(tracking_uri=uri)
        c.search_experiments(max_results=1)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:300]
        if "401" in msg or "Unauthorized" in msg or "credentials" in msg.lower():
            raise ZsexpError(f"MLflow tracking server {uri} refused the credentials (401); set "
                             f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None
        raise ZsexpError(f"cannot reach the MLflow tracking store {uri}: {msg}") from None
    return c


def mark_model_training(c, exp) -> None:
    """Tag an existing experiment (one an older zsexp created) as a model-training experiment."""
    if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        c.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)


def ensure_experiment(c, name: str, uri: str) -> str:
    """The experiment's id, created when missing; declared a model-training experiment so that the
    MLflow UI opens it on runs, not on the GenAI traces page (``mlflow.experimentKind``)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        mark_model_training(c, exp)
        return exp.experiment_id
    artifact_location = None
    if not uri.startswith("http"):
        artifact_location = (default_artifact_root() / name).as_uri()
    return c.create_experiment(name, artifact_location=artifact_location, tags=dict([EXPERIMENT_KIND]))


def search_all_runs(c, experiment_id: str, filter_string: str, page: int = 10_000) -> list:
    """Every run matching ``filter_string``, page by page (MLflow caps one search at 50,000 runs)."""
    out, token = [], None
    while True:
        batch = c.search_runs([experiment_id], filter_string=filter_string, max_results=page, page_token=token)
        out.extend(batch)
        token = batch.token
        if not token:
            return out


def find_child_run(c, experiment_id: str, sweep: str, trial_id: str) -> str | None:
    from zsexp.names import filter_value

    runs = c.search_runs([experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = {filter_value(sweep)} and "
                                                         f"tags.`{TAG_TRIAL}` = {filter_value(trial_id)}",
                         max_results=2)
    return runs[0].info.run_id if runs else None


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in result.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if k in ("training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid",
                 "time_since_restore", "iterations_since_restore", "done"):
            continue
        out[safe_name(k)] = float(v)
    return out


class Progress:
    """Throttled one-line sweep status: running / done / early-stopped / failed, best so far."""

    def __init__(self, name: str, metric: str, mode: str, every_s: float = 5.0,
                 out: Callable[[str], None] | None = None):
        # `print` is looked up when used: Tune swaps builtins.print during a run, and this object is
        # pickled with the experiment state (a stored reference to the old print would not pickle)
        self.name, self.metric, self.mode, self.every_s, self.out = name, metric, mode, every_s, out
        self._last = 0.0

    def maybe_print(self, state: dict[str, Any], force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        best = state.get("best")
        best_txt = "no result yet"
        if best:
            cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best["params"].items()))
            best_txt = f"best {self.metric}={best['value']:.3f} (trial {best['trial']}: {cfg})"
        (self.out or print)(f"[{self.name}] running {state['running']} | done {state['completed']} "
                 f"(early-stopped {state['stopped']}) | failed {state['failed']} | {best_txt}")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port out of range or already taken on ``host``, before the UI server is started."""
    import socket

    if not 1 <= port <= 65535:
        raise ZsexpError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ZsexpError(f"--host {host!r}: cannot be resolved ({exc.strerror or exc})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ZsexpError(f"cannot serve the MLflow UI on {host}:{port}: {exc.strerror or exc}; pass another "
                             f"--port") from None


def _is_home(folder: Path) -> bool:
    from zsexp.paths import zsexp_home

    return folder == zsexp_home()


def sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` tracking URI (None for any other URI)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def sqlite_folder_missing(uri: str) -> bool:
    """The default store's folder, ``$ZSEXP_HOME``, not made yet (a first command made it where it writes;
    a missing folder of another SQLite URI is refused, not made)."""
    path = sqlite_file(uri)
    return path is not None and not path.parent.is_dir() and _is_home(path.parent)


def start_ui(tracking_uri: str | None, host: str, port: int, links: Callable[[str], None] | None = None) -> int:
    """``mlflow ui`` on zsexp's store (the SQLite file under ZSEXP_HOME unless a URI is given);
    ``links(ui_url)`` prints the links of a sweep before the server starts.  A tracking *server*
    serves its own UI: zsexp checks it answers and prints its links instead of starting another."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("http"):
        client(uri)
        if links is not None:
            links(redact_uri(uri))
        print(f"the tracking server {redact_uri(uri)} serves the MLflow UI itself: open it in a browser")
        return 0
    missing = sqlite_folder_missing(uri)          # a first `zsexp ui`: MLflow makes an empty store there
    check_tracking_uri(uri, writes=missing)       # the UI only reads: a read-only store is served
    check_port_free(host, port)
    if missing:
        sqlite_file(uri).parent.mkdir(parents=True, exist_ok=True)
    if links is not None:
        links(f"http://{host}:{port}")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if not uri.startswith("http"):
        cmd += ["--default-artifact-root", default_artifact_root().as_uri()]
    print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it", flush=True)
    code = subprocess.call(cmd)
    if code not in (0, -2, 130):          # Ctrl-C is how a user stops it
        raise ZsexpError(f"the MLflow UI server exited with status {code}; its messages are above")
    return 0
