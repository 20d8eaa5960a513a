"""Shared helpers of the job entrypoints: read settings from the environment, run a zsexp command."""

from __future__ import annotations

import os
import sys


def env(name: str, default: str | None = None, required: bool = False) -> str:
    value = os.environ.get(name, default)
    if required and not value:
        print(f"zsexp job: error: set the environment variable {name}", file=sys.stderr)
        raise SystemExit(2)
    return str(value)


def default_storage(kind: str) -> str:
    """Where ``kind`` (sweeps, ablations) live when the job does not say: zsexp's own default, under
    ZSEXP_STATE_URI (the stack's object store, ``s3://BUCKET``), else under ZSEXP_HOME."""
    from zsexp.search.storage import default_storage as zsexp_default

    return str(zsexp_default(kind))


def sweep_exists(storage: str, name: str) -> bool:
    """A sweep of that name is kept at ``storage`` (a folder, or an object store)."""
    from zsexp.search.storage import sweep_names

    return name in sweep_names(storage)


def run(args: list[str]) -> int:
    from zsexp.cli import main

    print("zsexp " + " ".join(args), flush=True)
    return main(args)
