"""``zsexp ablate``: a paper's ablation table, or named variants, as a platform job (``zsexp.ablation``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from zsexp.ablation.options import AblateOptions
from zsexp.cli.common import command
from zsexp.options import from_args, option


@dataclass
class ListVariants:
    list_variants: bool = option(switch=True, help="print the model's table rows and named variants")


def register(sub) -> None:
    command(sub, "ablate", run, AblateOptions, ListVariants, stops_on_sigterm=True,
            help="a paper's ablation table (or named variants) over seeds and data splits, on Ray, in MLflow",
            description="Ablation job: every row (the paper's table, default: ZSCRGAN Table 8, CM-GAN Table 5; or "
                        "named variants) x seed x data split is one Ray trial, fitted on train + val for a fixed "
                        "budget and evaluated once on the unseen test classes.  The table: mean ± sd [95%% CI] per "
                        "cell, a paired Wilcoxon test of every row against the complete model over test queries / "
                        "images, the task's baseline and chance on the same splits, the paper's figures beside; "
                        "Markdown + HTML + plot, and MLflow (one ablation run, a nested run per model).  Base "
                        "configuration: the dataset's defaults (with --config/--set), or a sweep's winner (--from).  "
                        "Running the same command again skips finished runs.")


def run(args: argparse.Namespace) -> int:
    if args.list_variants:
        from zsexp.ablation.variants import describe_variants

        print(describe_variants(args.model))
        return 0
    from zsexp.ablation.job import run_ablation

    run_ablation(from_args(AblateOptions, args))
    return 0
