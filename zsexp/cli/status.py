"""``zsexp status``: every sweep a line, or one sweep's trials; read-only, while it runs or after."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from zsexp import options as opt
from zsexp.cli.common import command
from zsexp.options import option


@dataclass
class StatusOptions:
    name: str | None = option(optional_positional=True, help="the sweep (default: list every sweep)")
    storage: str | None = opt.storage()
    json: bool = opt.json_output()
    trust_storage: bool = opt.trust_storage()


def register(sub) -> None:
    command(sub, "status", run, StatusOptions, help="state of a sweep: trials, outcomes, best values",
            description="Show a sweep's trials (read-only; works while it runs or after it stopped).  Without "
                        "NAME: every sweep, a line each (status, trials finished, best validation value beside "
                        "the baseline and chance).")


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        return _every_sweep(args)
    from zsexp.search.status import show_links, sweep_status

    st = sweep_status(args.name, storage=args.storage, trust_storage=args.trust_storage)
    if args.json:
        print(json.dumps({**st, "meta": st["meta"].to_json(), "trials": [t.to_json() for t in st["trials"]]},
                         indent=2, default=str))
        return 0
    print_sweep(st)
    show_links(st["meta"], None)
    return 0


def _every_sweep(args: argparse.Namespace) -> int:
    from zsexp.search.status import list_sweeps
    from zsexp.search.storage import sweeps_root

    rows = list_sweeps(args.storage)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print(f"no sweeps under {sweeps_root(args.storage)} (start one with `zsexp search MODEL`)")
    else:
        print_sweeps(rows)
    return 0


def _num(v: float | None, sign: bool = False) -> str:
    return "-" if v is None else (f"{v:+.3f}" if sign else f"{v:.3f}")


def print_sweeps(rows: list[dict[str, Any]]) -> None:
    """A line per sweep: status, trials finished, best validation value beside the baseline and chance."""
    print(f"{'sweep':<34}{'model':<9}{'dataset':<20}{'status':<11}{'trials':>9}  {'objective':<20}"
          f"{'best':>9}{'baseline':>10}{'margin':>9}{'chance':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<34}unreadable: {r['error']}")
            continue
        obj = f"val {r['metric']} ({r['mode']})"
        print(f"{r['name']:<34}{r['model']:<9}{r['dataset'][:19]:<20}{r['status']:<11}"
              f"{r['finished']:>4}/{r['trials']:<4}  {obj:<20}{_num(r['best']):>9}{_num(r['baseline']):>10}"
              f"{_num(r['margin'], True):>9}{_num(r['chance']):>9}")
    print("details of one: zsexp status NAME")


def print_sweep(st: dict[str, Any]) -> None:
    """One sweep: where it lives, its objective and reference values, its growth, a line per trial."""
    m = st["meta"]
    print(f"sweep {m.name}: {m.model} on {m.dataset_name}, {m.trials} trials, status {m.status}")
    from zsexp.workcopy import describe

    print(f"  storage {describe(m.dir)}")
    print(f"  MLflow {m.tracking_uri} experiment {m.experiment!r}, parent run {m.parent_run_id}")
    print(f"  objective val {st['metric']} ({st['mode']})")
    from zsexp.search.compute import describe as spent

    print(f"  compute spent: {spent(st['compute'])}")
    if st.get("front"):
        from zsexp.search.status import print_front

        print_front(m.name, st["front"]["objectives"], st["front"]["trials"])
    print(f"  reference: {st['reference']}")
    for g in m.grown:
        print(f"  grown from {g.get('from')} to {g.get('to')} trials ({str(g.get('at', ''))[:19]})")
    if m.warm_start:
        print(f"  warm-started from sweep {m.warm_start.get('sweep')!r}: {m.warm_start.get('taken')} trial(s) taken, "
              f"{m.warm_start.get('skipped')} skipped")
    print(f"  {'trial':<14}{'status':<12}{'outcome':<15}{'rounds':>7}{'best':>10}")
    for t in st["trials"]:
        best = "-" if t.best is None else f"{t.best:.3f}"
        print(f"  {t.trial_id:<14}{t.status:<12}{(t.outcome or '-'):<15}{t.rounds:>7}{best:>10}")
