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


def run(args: list[str]) -> int:
    from zsexp.cli import main

    print("zsexp " + " ".join(args), flush=True)
    return main(args)
