"""``zsexp select``: the final selection of a sweep (``zsexp.selection``)."""

from __future__ import annotations

import argparse

from zsexp.cli.common import command
from zsexp.options import from_args
from zsexp.protocol import SelectOptions


def register(sub) -> None:
    command(sub, "select", run, SelectOptions, stops_on_sigterm=True,
            help="final selection: top configs x seeds, chosen on validation, reported on test, registered",
            description="Final-selection job: the sweep's top-k configurations (validation objective, each with "
                        "the round budget at which its trial reached it) are trained with several seeds on the "
                        "train classes and ranked by their mean validation objective (the decision), and trained "
                        "again on train + val and evaluated once on the unseen test classes (the report: mean, sd, "
                        "95%% CI, Wilcoxon winner vs runner-up; Markdown + PNG; MLflow).  The winner's seed nearest "
                        "its mean validation value is registered with alias `candidate`.  Test classes never "
                        "decide anything.  Running it again skips finished runs.")


def run(args: argparse.Namespace) -> int:
    from zsexp.selection import run_selection

    run_selection(from_args(SelectOptions, args))
    return 0
