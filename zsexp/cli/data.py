"""``zsexp data list`` / ``zsexp data describe``: the built-in datasets, and any dataset's sizes."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

from zsexp import options as opt
from zsexp.options import option


@dataclass
class ListOptions:
    json: bool = opt.json_output()


@dataclass
class DescribeOptions:
    dataset: str = option(dataclasses.MISSING, positional=True, metavar="NAME-or-PATH",
                          help="a built-in name, an xlsa17 or UCI digits directory, or a .npz file")
    seed: int = option(0, **opt.SEED, help="seed of a synthetic dataset (default %(default)s)")
    json: bool = opt.json_output()


def register(sub) -> None:
    p_data = sub.add_parser("data", help="list and describe datasets",
                            description="List built-in datasets and describe any dataset.")
    data_sub = p_data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    from zsexp.cli.common import command

    command(data_sub, "list", run_list, ListOptions, help="list built-in synthetic datasets",
            description="The built-in synthetic datasets: classes, split sizes, dimensions.")
    command(data_sub, "describe", run_describe, DescribeOptions,
            help="sizes, dimensions, classes and images per split, fingerprint",
            description="Describe a dataset: a built-in name, an xlsa17 directory (res101.mat + att_splits.mat), "
                        "or a .npz file with arrays features, labels, class_embeddings, train_classes, "
                        "val_classes, test_classes (optional: class_names, test_seen_images, text_features, "
                        "seen_probs, prob_classes).")
    p_data.set_defaults(func=lambda a: (p_data.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
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


def run_describe(args: argparse.Namespace) -> int:
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
