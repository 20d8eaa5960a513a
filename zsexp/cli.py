"""The ``zsexp`` command.  Each subcommand parses, then calls one library function.

Only commands that work end to end are registered; the README's roadmap lists the rest.
Errors are one line on stderr and exit code 2 (bad input) -- never a bare traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from zsexp.errors import ZsexpError


# --------------------------------------------------------------------------- data
def cmd_data_list(args: argparse.Namespace) -> int:
    from zsexp.data import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22}{'classes':>8}  {'train/val/test':<16}{'image/text dims':<16}")
    for r in rows:
        print(f"{r['name']:<22}{r['classes']:>8}  {r['split']:<16}{r['dims']:<16}")
    print("\nAlso accepted: an xlsa17 directory (res101.mat + att_splits.mat) or a .npz file "
          "(see `zsexp data describe --help`).")
    return 0


def cmd_data_describe(args: argparse.Namespace) -> int:
    from zsexp.data import load_dataset

    info = load_dataset(args.dataset, seed=args.seed).describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset      {info['name']}  ({info['source']})")
    print(f"fingerprint  {info['fingerprint']}")
    print(f"dims         image {info['dims']['image']}, text {info['dims']['text']}"
          + (f", per-image text {info['per_image_text']}" if info["per_image_text"] else "")
          + (f", seen-class probabilities over {info['seen_probs']}" if info["seen_probs"] else ""))
    print(f"size         {info['n_images']} images, {info['n_classes']} classes")
    print(f"{'split':<12}{'classes':>8}{'images':>9}")
    for split, row in info["splits"].items():
        print(f"{split:<12}{row['classes']:>8}{row['images']:>9}")
    return 0


# --------------------------------------------------------------------------- train / evaluate
def cmd_train(args: argparse.Namespace) -> int:
    from zsexp.train import train_run

    out = args.out or f"runs/{args.model}-{args.dataset.replace('/', '_')}-seed{args.seed}"
    train_run(args.model, args.dataset, config_file=args.config, sets=args.set, seed=args.seed,
              data_seed=args.data_seed, out_dir=out, device=args.device, fit_split=args.fit)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from zsexp.train import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, split=args.split, dataset=args.dataset, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['model']} on {res['dataset']} [{res['split']}]")
        for key, val in res["metrics"].items():
            print(f"  {key:<16}{val:8.2f}")
    return 0


def _model_help() -> str:
    import dataclasses

    from zsexp.models import MODELS

    lines = []
    for name, spec in MODELS.items():
        keys = ", ".join(f.name for f in dataclasses.fields(spec.config_cls))
        lines.append(f"{name} config keys: {keys}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsexp",
        description="Hyperparameter search and experiment tracking for zero-shot cross-modal GANs "
                    "(CM-GAN, ZSCRGAN).  State lives under $ZSEXP_HOME (default ~/.zsexp).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p_data = sub.add_parser("data", help="list and describe datasets",
                            description="List built-in datasets and describe any dataset.")
    data_sub = p_data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p = data_sub.add_parser("list", help="list built-in synthetic datasets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser(
        "describe", help="sizes, dimensions, classes and images per split, fingerprint",
        description="Describe a dataset: a built-in name, an xlsa17 directory (res101.mat + att_splits.mat), "
                    "or a .npz file with arrays features, labels, class_embeddings, train_classes, "
                    "val_classes, test_classes (optional: class_names, test_seen_images, text_features, "
                    "seen_probs, prob_classes).")
    p.add_argument("dataset", metavar="NAME-or-PATH")
    p.add_argument("--seed", type=int, default=0, help="seed of a synthetic dataset (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_data_describe)
    p_data.set_defaults(func=lambda a: (p_data.print_help(), 2)[1])

    p = sub.add_parser(
        "train", help="train one model on one dataset (progress, metrics.json, checkpoints)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one model: rounds of E-M iterations (ZSCRGAN) or alternating steps (CM-GAN), "
                    "validation after each, best/last checkpoints, then test metrics of the "
                    "best-on-validation model.  Config precedence: paper defaults < dataset defaults < "
                    "--config YAML < --set.",
        epilog=_model_help())
    p.add_argument("model", choices=["zscrgan", "cmgan"])
    p.add_argument("--dataset", default="synthetic-tiny", help="built-in name, xlsa17 directory or .npz file")
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of a synthetic dataset (default 0)")
    p.add_argument("--fit", choices=["train", "trainval"], default="train",
                   help="classes to fit on: train (val held out for tuning) or trainval (final model)")
    p.add_argument("--out", help="output directory (default runs/MODEL-DATASET-seedS)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="reload a checkpoint and evaluate it",
                       description="Reload a checkpoint written by `zsexp train` and evaluate a split.")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ZsexpError as exc:
        print(f"zsexp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zsexp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
