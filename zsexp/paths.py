"""Where zsexp keeps its state: ``ZSEXP_HOME`` (default ``~/.zsexp``)."""

from __future__ import annotations

import os
from pathlib import Path


def zsexp_home() -> Path:
    home = Path(os.environ.get("ZSEXP_HOME", Path.home() / ".zsexp")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


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
