"""``zsexp resume``: an interrupted sweep goes on where it stopped, or a sweep grows (``--trials N``)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from zsexp import options as opt
from zsexp.cli.common import command
from zsexp.options import from_args, option


@dataclass
class ResumeOptions:
    name: str = option(dataclasses.MISSING, positional=True, help="the sweep")
    trials: int | None = option(**opt.COUNT, metavar="N",
                                help="grow the sweep to N trials in total (N at least its current count; a grid "
                                     "sweep at most its grid)")
    storage: str | None = opt.storage()
    address: str | None = opt.address()
    retry_errored: bool = option(switch=True, help="also retry failed trials from their checkpoint")
    trust_storage: bool = opt.trust_storage()


def register(sub) -> None:
    command(sub, "resume", run, ResumeOptions, stops_on_sigterm=True,
            help="continue an interrupted sweep where it stopped, or grow it (--trials N)",
            description="Continue a sweep after the driver died: finished trials are kept, interrupted ones "
                        "continue from their last checkpoint, the Optuna sampler keeps its history, MLflow runs "
                        "are re-attached.  With --trials N a finished (or interrupted) sweep runs on to N trials "
                        "in all: the same Optuna study samples the new trials with every earlier one in view, "
                        "ASHA's rungs keep the earlier results, and the new child runs join the same MLflow "
                        "parent run.")


def run(args: argparse.Namespace) -> int:
    from zsexp.search.sweep import resume_sweep

    summary = resume_sweep(**dataclasses.asdict(from_args(ResumeOptions, args)))
    return 0 if summary.get("complete", True) else 130
