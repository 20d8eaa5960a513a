"""The GANs against the simplest honest references, on the same splits: the task's ridge baseline, CONSE
(CM-GAN's initialisation, eq. 1) and chance.

    python benchmarks/vs_baselines.py                         # train mode, synthetic-tiny + UCI digits
    python benchmarks/vs_baselines.py --data synthetic-imagenet --models cmgan --seeds 3
    python benchmarks/vs_baselines.py --data ../shared/data/uci-mfeat --splits 10
    python benchmarks/vs_baselines.py --search --data synthetic-cub --models zscrgan --trials 32
    python benchmarks/vs_baselines.py --search --data synthetic-cub --models zscrgan --trials 12 \
        --space search_spaces/zscrgan-small.yaml           # searched narrow widths: ~1.5 h on 2 cores

Train mode (default): every model is trained with ``zsexp train``'s code (dataset / size defaults, best
round chosen on the validation classes, then the test classes once), over ``--seeds`` model seeds and,
for the UCI digits, ``--splits`` random class splits (``--data-seed``).  The baseline is tuned on the
validation classes and fitted on train, like the models.

Search mode (``--search``, issue 11's target protocol): ``zsexp search`` (``--trials``) then ``zsexp
select`` (k 3 x 3 seeds); the winner's test mean (final models fitted on train + val) is compared with
the baseline fitted on train + val, as the selection report does, in a temporary ZSEXP_HOME.

Each table row is mean ± sd over seeds x splits; the last lines say, per data set and model, whether the
model reaches its baseline and by how much it misses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

SHARED_UCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "uci-mfeat"
METRICS = {"zscrgan": ("precision@50", "max"), "cmgan": ("zsl/mfr", "min")}
EXTRA = {"zscrgan": ("map@50", "max"), "cmgan": ("zsl/fh@5", "max")}


def fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.2f} ± {sd:.2f}"


def train_mode(model: str, dataset: str, seeds: int, splits: int, sets: list[str]) -> dict[str, dict[str, list]]:
    from zsexp.train import train_run

    rows: dict[str, dict[str, list]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for split in range(splits):
            for seed in range(seeds):
                res = train_run(model, dataset, sets=sets, seed=seed, data_seed=split, out_dir=f"{tmp}/{split}-{seed}",
                                device="cpu", log=lambda _m: None, threads=1)
                add(rows, model, res["test"])
                if res["baseline"] and res["baseline"].get("test"):
                    add(rows, res["baseline"]["model"], res["baseline"]["test"])
                add(rows, "chance", res["chance"]["test"])
                if model == "cmgan" and seed == 0:      # CONSE: CM-GAN's initialisation (Table 5, first row)
                    c = train_run(model, dataset, sets=[*sets, "ablation=conse"], seed=seed, data_seed=split,
                                  out_dir=f"{tmp}/conse-{split}", device="cpu", log=lambda _m: None, threads=1)
                    add(rows, "CONSE", c["test"])
                m = METRICS[model][0]
                print(f"  {model} {dataset} split {split} seed {seed}: {m} {res['test'][m]:.2f} | "
                      f"{res['baseline']['model'] if res['baseline'] else '-'} "
                      f"{(res['baseline'] or {}).get('test', {}).get(m, float('nan')):.2f} | chance "
                      f"{res['chance']['test'].get(m, float('nan')):.2f}  ({time.time() - t0:.0f}s)", flush=True)
    return rows


def search_mode(model: str, dataset: str, trials: int, splits: int, space: str | None = None,
                sets: list[str] | None = None) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["ZSEXP_HOME"] = home
        from zsexp.cli import main as cli

        for split in range(splits):
            name = f"vs-{model}-{split}"
            extra = (["--space", space] if space else []) + [a for s in sets or [] for a in ("--set", s)]
            assert cli(["search", model, "--dataset", dataset, "--data-seed", str(split), "--trials", str(trials),
                        "--name", name, "--progress-every", "0", *extra]) == 0
            assert cli(["select", name, "--k", "3", "--seeds", "3"]) == 0
            from zsexp.search.storage import read_meta

            sel = json.loads((Path(read_meta(name, None).dir) / "selection-k3-s3" / "selection.json").read_text())
            w = sel["summary"][sel["winner"]]["stats"]
            add(rows, model, {m: s["mean"] for m, s in w.items()})
            if sel.get("baseline"):
                add(rows, sel["baseline"]["model"], sel["baseline"]["metrics"])
                add(rows, "chance", sel["baseline"]["chance"])
    return rows


def add(rows: dict[str, dict[str, list]], name: str, metrics: dict) -> None:
    for k, v in metrics.items():
        if isinstance(v, float):
            rows.setdefault(name, {}).setdefault(k, []).append(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", action="append", help="dataset (repeatable; default synthetic-tiny and the UCI digits)")
    ap.add_argument("--models", default="zscrgan,cmgan")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--splits", type=int, default=5, help="random class splits of the UCI digits")
    ap.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                    help="override a model's key, e.g. zscrgan:em_iterations=10")
    ap.add_argument("--search", action="store_true", help="search + select instead of single training runs")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--space", help="search mode: the search space file (default: the model's shipped space)")
    args = ap.parse_args()
    datasets = args.data or ["synthetic-tiny"] + ([str(SHARED_UCI)] if SHARED_UCI.is_dir() else [])
    verdicts = []
    for dataset in datasets:
        splits = args.splits if "uci-mfeat" in dataset else 1
        for model in args.models.split(","):
            sets = [s.split(":", 1)[1] for s in args.set if s.startswith(model + ":")]
            t0 = time.time()
            rows = (search_mode(model, dataset, args.trials, splits, args.space, sets) if args.search
                    else train_mode(model, dataset, args.seeds, splits, sets))
            metric, extra = METRICS[model][0], EXTRA[model][0]
            n = len(rows[model][metric])
            print(f"\n{model} on {dataset}: {'search + select' if args.search else 'zsexp train'}, {n} runs "
                  f"({splits} split(s)), test classes, {time.time() - t0:.0f}s")
            print(f"| model | {metric} | {extra} |\n|---|---|---|")
            for name, r in rows.items():
                print(f"| {name} | {fmt(r.get(metric, []))} | {fmt(r.get(extra, []))} |")
            refs = [k for k in rows if k not in (model, "chance")]
            for m, md in (METRICS[model], EXTRA[model]):
                ours = statistics.mean(rows[model][m])
                for ref in refs:
                    theirs = statistics.mean(rows[ref][m])
                    gap = ours - theirs if md == "max" else theirs - ours
                    verdicts.append(f"{model} vs {ref} on {Path(dataset).name}: {m} {ours:.2f} vs {theirs:.2f} "
                                    f"({'meets' if gap >= 0 else 'MISSES'} the target by {gap:+.2f})")
    print()
    for v in verdicts:
        print(v)


if __name__ == "__main__":
    main()
