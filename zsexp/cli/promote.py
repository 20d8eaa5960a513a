"""``zsexp promote``: a registry alias (default champion) moved to a model version, or the versions listed."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from zsexp import options as opt
from zsexp.cli.common import command
from zsexp.options import option


@dataclass
class PromoteOptions:
    name: str = option(dataclasses.MISSING, positional=True, help="the registered model")
    version: str | None = option(help="model version (default: the one with alias candidate)")
    alias: str = option("champion", help="the alias to move (default %(default)s)")
    force: bool = option(switch=True, help="move it even when the version's test mean is worse than the holder's")
    list: bool = option(switch=True, help="list versions, aliases, validation and test means")
    tracking_uri: str | None = opt.tracking_uri()


def register(sub) -> None:
    command(sub, "promote", run, PromoteOptions, help="move a registry alias (default champion) to a model version",
            description="Point an alias of a registered model at a version (default: the @candidate version, "
                        "chosen on validation by `zsexp select`).  The recorded test means are used only to refuse "
                        "a regression: exit 2 when the version's configuration has a worse test mean than the "
                        "current holder's, unless --force.  Records the previous holder and the time as tags.  "
                        "--list shows versions, aliases, validation and test means.")


def run(args: argparse.Namespace) -> int:
    from zsexp.registry import list_versions, promote

    if args.list:
        print_versions(list_versions(args.name, args.tracking_uri))
        return 0
    promote(args.name, version=args.version, alias=args.alias, force=args.force, tracking_uri=args.tracking_uri)
    return 0


def print_versions(rows: list[dict[str, Any]]) -> None:
    """A line per registered version: its aliases, the validation mean that chose it, its test mean."""
    print(f"{'version':<9}{'aliases':<24}{'val mean (chose it)':<32}{'test mean (report)':<20}sweep")
    for r in rows:
        val = f"{r['objective']}={float(r['val_objective_mean']):.3f}" if r["val_objective_mean"] else "-"
        tst = f"{float(r['test_objective']):.3f}" if r["test_objective"] else "-"
        print(f"{r['version']:<9}{','.join(r['aliases']) or '-':<24}{val:<32}{tst:<20}{r['sweep'] or '-'}")
