"""Ablation tables like ZSCRGAN Table 8 and CM-GAN Table 5, on the built-in synthetic datasets.

    python benchmarks/ablations.py zscrgan [--dataset synthetic-cub] [--seeds 3] [--set key=value ...]
    python benchmarks/ablations.py cmgan   [--dataset synthetic-imagenet] [--seeds 3] [--set key=value ...]

Each row is one ablation trained with ``zsexp.train.train_run`` (the code behind ``zsexp train``:
best round chosen on validation classes, then evaluated on the unseen test classes), over several
seeds; the table prints mean ± std, the task's ridge baseline on the same split and fit classes
(``zsexp.baselines.task_baseline``) and chance.  ZSCRGAN fits on ``train`` classes;
CM-GAN fits on ``trainval`` with the test classes' unlabelled images as its transductive data,
the paper's protocol for Table 5.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from zsexp.data import load_dataset
from zsexp.train import train_run

ROWS = {
    "zscrgan": [("Complete model", "none"), ("w/o wrong class embedding", "no_wrong"),
                ("w/o R and triplet loss", "no_r_triplet"), ("w/o triplet loss", "no_triplet"),
                ("w/o R", "no_r"), ("w/o GAN", "no_gan")],
    "cmgan": [("Init. CONSE", "conse"), ("cycle L_c", "cycle"), ("gan L_gan", "gan"),
              ("cgan L_gan + λc L_c", "cgan"), ("sup L_sup", "sup"), ("CM-GAN", "full")],
}
METRICS = {"zscrgan": ["precision@50", "map@50", "top1"], "cmgan": ["zsl/mfr", "gzsl/mfr", "zsl/fh@5"]}
DEFAULT_DATASET = {"zscrgan": "synthetic-cub", "cmgan": "synthetic-imagenet"}
DEFAULT_SETS = {"zscrgan": [], "cmgan": ["iters_per_step=300", "lr=1e-3", "lr_d=1e-3"]}


def chance(model: str, dataset: str) -> dict[str, float]:
    data = load_dataset(dataset)
    if model == "zscrgan":
        labels = data.labels[data.images("test")]
        p = 100.0 * float(np.mean([(labels == c).mean() for c in data.test_classes]))
        return {"precision@50": p, "map@50": float("nan"), "top1": p}
    k = len(data.test_classes)
    return {"zsl/mfr": 50.0, "gzsl/mfr": 50.0, "zsl/fh@5": 100.0 * 5 / k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(ROWS))
    ap.add_argument("--dataset")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=None, metavar="KEY=VALUE")
    ap.add_argument("--rows", help="comma-separated subset of ablation values")
    args = ap.parse_args()
    dataset = args.dataset or DEFAULT_DATASET[args.model]
    sets = DEFAULT_SETS[args.model] + (args.set or [])
    fit = "trainval" if args.model == "cmgan" else "train"
    metrics = METRICS[args.model]
    rows = [r for r in ROWS[args.model] if not args.rows or r[1] in args.rows.split(",")]
    print(f"{args.model} on {dataset}, fit={fit}, seeds 0..{args.seeds - 1}, overrides {sets}")
    results = {}
    baseline, chance_row = None, {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for label, ablation in rows:
            per_seed = []
            for seed in range(args.seeds):
                res = train_run(args.model, dataset, sets=[*sets, f"ablation={ablation}"], seed=seed,
                                out_dir=f"{tmp}/{ablation}-{seed}", device="cpu", fit_split=fit, log=lambda _m: None)
                per_seed.append(res["test"])
                if res.get("baseline") and res["baseline"].get("test"):     # same split, same fit classes
                    baseline = res["baseline"]
                chance_row = res["chance"]["test"]
                print(f"  {label:<28} seed {seed}: " + ", ".join(f"{m}={res['test'][m]:.2f}" for m in metrics)
                      + f"  ({time.time() - t0:.0f}s)", flush=True)
            results[label] = per_seed
    ch = chance(args.model, dataset)
    print()
    print("| model | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for label, per_seed in results.items():
        cells = []
        for m in metrics:
            vals = [r[m] for r in per_seed]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.2f} ± {sd:.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    if baseline:
        print(f"| {baseline['model']} baseline (lam {baseline['config']['lam']:g}, chosen on validation) | "
              + " | ".join(f"{baseline['test'][m]:.2f}" for m in metrics) + " |")
    print("| chance | " + " | ".join(f"{chance_row[m]:.2f}" if m in chance_row else
                                     ("n/a" if np.isnan(ch[m]) else f"{ch[m]:.2f}") for m in metrics) + " |")
    print(f"\ntotal {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
