"""``zsexp search``: a sweep on Ray Tune + Optuna + ASHA, tracked in MLflow (``zsexp.search.sweep``)."""

from __future__ import annotations

import argparse

from zsexp.cli.common import command
from zsexp.options import from_args
from zsexp.search.options import SweepOptions


def register(sub) -> None:
    command(sub, "search", run, SweepOptions, stops_on_sigterm=True,
            help="hyperparameter sweep on Ray Tune + Optuna + ASHA, tracked in MLflow",
            description="Run a sweep: Ray Tune schedules trials (a local Ray unless --address), Optuna samples "
                        "(through Ray's OptunaSearch), ASHA stops weak trials on the round axis, MLflow records a "
                        "parent run per sweep and a child run per trial.  The objective is a metric on the "
                        "VALIDATION classes; test classes are never seen during a sweep.")


def run(args: argparse.Namespace) -> int:
    from zsexp.search.sweep import run_sweep

    summary = run_sweep(from_args(SweepOptions, args))
    return 0 if summary.get("complete", True) else 130
