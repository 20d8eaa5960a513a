"""The papers' ablation tables through the platform job (``zsexp ablate``), with the wall time.

    python benchmarks/ablations.py zscrgan [--dataset synthetic-cub] [--seeds 3] [--data-seeds S ...]
    python benchmarks/ablations.py cmgan   [--dataset synthetic-imagenet] [--seeds 3]

A thin caller: the defaults of this benchmark (dataset, and for CM-GAN the shorter steps the
synthetic ImageNet stand-in trains well with) and then :func:`zsexp.ablation.run_ablation`, whose
table (mean ± sd [95% CI], paired Wilcoxon against the complete model, baseline, chance, the paper's
column) is printed and written under ``$ZSEXP_HOME/ablations/NAME``.  Any other option of
``zsexp ablate`` is passed through (``--set``, ``--variants``, ``--max-concurrent`` ...).
"""

from __future__ import annotations

import argparse
import sys
import time

DEFAULT_DATASET = {"zscrgan": "synthetic-cub", "cmgan": "synthetic-imagenet"}
DEFAULT_SETS = {"zscrgan": [], "cmgan": ["iters_per_step=300", "lr=1e-3", "lr_d=1e-3"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(DEFAULT_DATASET))
    ap.add_argument("--dataset")
    args, rest = ap.parse_known_args()
    argv = ["ablate", args.model, "--dataset", args.dataset or DEFAULT_DATASET[args.model]]
    for kv in DEFAULT_SETS[args.model]:
        argv += ["--set", kv]
    from zsexp.cli import main as zsexp

    t0 = time.time()
    rc = zsexp(argv + rest)
    print(f"\nwall time {time.time() - t0:.0f} s (zsexp {' '.join(argv + rest)})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
