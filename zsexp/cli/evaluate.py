"""``zsexp evaluate``: a checkpoint of ``zsexp train`` reloaded and evaluated, beside baseline and chance."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

from zsexp import options as opt
from zsexp.cli.common import command
from zsexp.options import option


@dataclass
class EvaluateOptions:
    checkpoint: str = option(dataclasses.MISSING, positional=True, help="a checkpoint written by `zsexp train`")
    split: str = option("test", choices=("val", "test"), help="the split to evaluate (default %(default)s)")
    dataset: str | None = option(help="dataset to evaluate on (default: the one it was trained on)")
    device: str = opt.device()
    json: bool = opt.json_output()


def register(sub) -> None:
    command(sub, "evaluate", run, EvaluateOptions, help="reload a checkpoint and evaluate it",
            description="Reload a checkpoint written by `zsexp train` and evaluate a split.")


def run(args: argparse.Namespace) -> int:
    from zsexp.train import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, split=args.split, dataset=args.dataset, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    base, split = res.get("baseline"), res["split"]
    print(f"{res['model']} on {res['dataset']} [{split}]"
          + (f"   ({base['model']} baseline and chance on the same split beside it)" if base else
             "   (chance beside it)"))
    for key, val in res["metrics"].items():
        b = base[split].get(key) if base and base.get(split) else None
        c = res["chance"].get(key)
        print(f"  {key:<20}{val:8.2f}" + (f"   {base['model']} {b:8.2f}" if b is not None else "")
              + (f"   chance {c:6.2f}" if c is not None else ""))
    return 0
