"""``zsexp train``: one model on one dataset, outside any sweep; ``--help`` lists the model's config keys."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from zsexp import options as opt
from zsexp.errors import ZsexpError
from zsexp.options import add_options, option


@dataclass
class TrainOptions:
    model: str = opt.model()
    dataset: str = opt.dataset()
    config: str | None = option(metavar="FILE", help="YAML file of config keys")
    sets: tuple[str, ...] = opt.sets("override one key")
    seed: int = option(0, **opt.SEED, help="model seed (default %(default)s)")
    data_seed: int = option(0, **opt.SEED, help="seed of a synthetic dataset (default %(default)s)")
    threads: int | None = option(**opt.THREADS, help="intra-op CPU threads (default: torch's, one per core); on a "
                                                     "shared or loaded machine 1-2 is often much faster")
    fit: str = option("train", choices=("train", "trainval"),
                      help="classes to fit on: train (val held out for tuning) or trainval (final model)")
    out: str | None = option(help="output directory (default runs/MODEL-DATASET-seedS)")
    device: str = opt.device()


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train one model on one dataset (progress, metrics.json, checkpoints)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one model: rounds of E-M iterations (ZSCRGAN) or alternating steps (CM-GAN), "
                    "one closed-form fit (ridge, ridge-zsl: the tasks' baselines), validation after each, "
                    "best/last checkpoints, then test metrics of the best-on-validation model, printed beside "
                    "chance and the task's baseline on the same split.  Config precedence: paper defaults < "
                    "dataset (size) defaults < --config YAML < --set.  `zsexp train MODEL [--dataset D] --help` "
                    "lists MODEL's keys with defaults and ranges (and the defaults D gets).",
        add_help=False)
    p.add_argument("-h", "--help", action=ModelHelp, help="show this help and the model's config keys")
    add_options(p, TrainOptions)
    p.set_defaults(func=run, stops_on_sigterm=False)


def run(args: argparse.Namespace) -> int:
    from zsexp.train import train_run

    out = args.out or f"runs/{args.model}-{args.dataset.replace('/', '_')}-seed{args.seed}"
    if Path(out).exists() and not Path(out).is_dir():
        raise ZsexpError(f"--out {out}: exists and is not a directory")
    train_run(args.model, args.dataset, config_file=args.config, sets=args.sets, seed=args.seed,
              data_seed=args.data_seed, out_dir=out, device=args.device, fit_split=args.fit, threads=args.threads)
    return 0


def model_config_help(family: str | None, dataset: str | None = None) -> str:
    """Every config key of a model: default, allowed values, help text; then the dataset defaults
    that replace paper defaults (built-in datasets, or the size rule for a given ``dataset``)."""
    from zsexp.models import MODELS

    lines = []
    for name, spec in MODELS.items():
        if not family or name == family:
            lines.extend(_family_help(name, spec, dataset))
    return "\n".join(lines)


def _family_help(name: str, spec, dataset: str | None) -> list[str]:
    from zsexp.config import describe_field
    from zsexp.data.synthetic import SPECS
    from zsexp.models import dataset_defaults, size_defaults

    lines = [f"{name} config keys (--set KEY=VALUE; paper default, allowed values, meaning):"]
    for f in dataclasses.fields(spec.config_cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {f.name:<18} {default!s:<14} {describe_field(f):<32} {f.metadata.get('help', '')}")
    built_in = [(ds, s.defaults.get(name)) for ds, s in SPECS.items() if s.defaults.get(name)]
    if built_in:
        lines.append("  dataset defaults (replace the paper's on that data):")
        lines.extend(f"    {ds}: " + ", ".join(f"{k}={v}" for k, v in d.items()) for ds, d in built_in)
    lines.append("  " + size_defaults.__doc__.strip().splitlines()[0])
    if dataset:
        from zsexp.data import load_dataset

        try:
            d = dataset_defaults(name, load_dataset(dataset))
            lines.append(f"  on {dataset}: " + (", ".join(f"{k}={v}" for k, v in d.items()) if d
                                                 else "the paper defaults"))
        except ZsexpError as exc:
            lines.append(f"  ({exc})")
    lines.append("")
    return lines


class ModelHelp(argparse.Action):
    """``-h``: the command's help, then the chosen model's config keys (all models when none is given yet)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        print()
        print(model_config_help(getattr(namespace, "model", None), getattr(namespace, "dataset", None)))
        parser.exit()
