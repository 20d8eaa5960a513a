"""Growing a sweep: does ``resume --trials 2N`` lose any history, and what does ``--warm-start`` gain?

    python benchmarks/grow_sweep.py                 # ZSCRGAN, N = 34, 5 seeds (about 20 min on 2 cores)
    python benchmarks/grow_sweep.py --smoke         # checks the pipeline in a few minutes: not a measurement

The task, space and compute unit are the search-efficiency benchmark's (``benchmarks/search_efficiency.py``:
ZSCRGAN on synthetic-tiny, TPE + ASHA on optimiser updates, the product's default), with its measured
target (``--target``, default 35.20 validation P@50: the grid optimum minus the seed spread of the grid's
best configuration) and its grid compute (``--grid-compute``, 32,400 updates per seed).  For each seed:

* **(a) one sweep** of 2N trials;
* **(b) grown**: a sweep F of N trials, then ``zsexp resume F --trials 2N`` (the same study, rungs and
  MLflow parent);
* **(c) warm**: after F's first N trials, a new sweep of N trials ``--warm-start F`` (its sampler starts
  from F's trials), read as F's N trials followed by the new ones;
* **(d) cold**: after F's first N trials, a new sweep of N trials from nothing (another sampler seed), read
  the same way: what a user without either feature would do.

Every trial is real training through the product's ``run_sweep`` / ``resume_sweep`` on one local Ray.
Printed: compute to the target (fraction of the grid's, median and quartiles over seeds, and per seed),
and the best validation P@50 at the end; (b) must match (a) within seed noise; (c) against (d) is what
warm starting gains over a cold second sweep.  ``--out`` holds every number (JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_efficiency import anytime, fmt_q, quiet, space_file, sweep_events, to_target  # noqa: E402


def events_of(name: str, key: str, t0: float, since: float = 0.0, until: float = math.inf) -> list[dict]:
    out = [e for e in sweep_events(name, key) if since <= e["ts"] < until]
    for e in out:
        e["t"] = e["ts"] - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=34, help="trials of a first sweep (default 34: half the 68 of the "
                                                      "search-efficiency benchmark's TPE + ASHA)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--target", type=float, default=35.20)
    ap.add_argument("--grid-compute", type=float, default=32400.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="N = 4, 2 seeds, 3 rounds: checks the pipeline only")
    ap.add_argument("--out", default="grow_sweep.json")
    args = ap.parse_args()
    import ray
    import search_efficiency as se

    from zsexp.search.sweep import SweepOptions, resume_sweep, run_sweep

    if args.smoke:
        args.n, args.seeds = 4, 2
        se.SPACES["zscrgan"]["fixed"]["em_iterations"] = 3
        se.SPACES["zscrgan"]["fidelity"].update(max_rounds=3, max_updates=270)
    home = Path(tempfile.mkdtemp(prefix="zsexp-grow-"))
    os.environ["ZSEXP_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    space = space_file("zscrgan", "tpe+asha", home)
    key, mode, n = "val_precision_at_50", "max", args.n
    log = home / "sweeps.log"
    print(f"ZSCRGAN on synthetic-tiny, TPE + ASHA; N = {n}; seeds 0-{args.seeds - 1}; target {args.target} val "
          f"P@50; ZSEXP_HOME {home}; the sweeps' own output: {log}", flush=True)

    def sweep(name: str, trials: int, seed: int, warm: str | None = None) -> float:
        t0 = time.time()
        with quiet(log):
            run_sweep(SweepOptions(model="zscrgan", dataset="synthetic-tiny", space=str(space), trials=trials,
                                   seed=seed, name=name, cpus_per_trial=1, max_concurrent=args.concurrency,
                                   progress_every_s=1e9, warm_start=warm))
        return t0

    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_all = time.time()
    res: dict[str, dict[str, dict]] = {v: {} for v in ("a", "b", "c", "d")}
    try:
        for seed in range(args.seeds):
            t0 = sweep(f"a-s{seed}", 2 * n, seed)
            ev_a = events_of(f"a-s{seed}", key, t0)
            t0 = sweep(f"f-s{seed}", n, seed)
            first_end = time.time()
            ev_f = events_of(f"f-s{seed}", key, t0)
            tw = sweep(f"w-s{seed}", n, seed + 1000, warm=f"f-s{seed}")
            ev_w = events_of(f"w-s{seed}", key, tw)
            tc = sweep(f"c-s{seed}", n, seed + 1000)
            ev_c = events_of(f"c-s{seed}", key, tc)
            with quiet(log):
                resume_sweep(f"f-s{seed}", trials=2 * n)
            ev_b = events_of(f"f-s{seed}", key, t0)
            ev_b_second = [e for e in ev_b if e["ts"] >= first_end]
            for v, first, second in (("a", ev_a, []), ("b", ev_f, ev_b_second), ("c", ev_f, ev_w),
                                     ("d", ev_f, ev_c)):
                curve = anytime(first + second, mode, args.grid_compute)
                second_curve = anytime(second, mode, args.grid_compute) if second else []
                frac, _ = to_target(curve, args.target, mode)
                res[v][str(seed)] = {
                    "to_target": frac, "best": curve[-1][1] if curve else None,
                    "compute": curve[-1][0] if curve else 0.0,
                    "second_best": second_curve[-1][1] if second_curve else None,
                    "second_to_target": to_target(second_curve, args.target, mode)[0] if second_curve else None}
            print(f"  seed {seed}: " + "; ".join(
                f"({v}) to target {r[str(seed)]['to_target']:.3f}, best {r[str(seed)]['best']:.2f}"
                for v, r in res.items()) + f"  ({time.time() - t_all:.0f}s)", flush=True)
    finally:
        ray.shutdown()
    labels = {"a": f"(a) one sweep of {2 * n}", "b": f"(b) {n}, then resume --trials {2 * n}",
              "c": f"(c) {n}, then a warm-started sweep of {n}", "d": f"(d) {n}, then a cold sweep of {n}"}
    print()
    width = 8 * args.seeds + 4
    print(f"{'variant':<42}{'compute to the target':<28}{'per seed':<{width}}{'best at the end':<24}"
          f"{'best of the second part'}")
    for v, label in labels.items():
        per = [res[v][str(s)]["to_target"] for s in range(args.seeds)]
        best = [res[v][str(s)]["best"] for s in range(args.seeds)]
        second = [res[v][str(s)]["second_best"] for s in range(args.seeds)]
        shown = ", ".join("never" if math.isinf(x) else f"{x:.3f}" for x in per)
        print(f"{label:<42}{fmt_q(per, 3):<28}{shown:<{width}}{fmt_q(best):<24}{fmt_q(second)}")
    doc = {"n": n, "seeds": args.seeds, "target": args.target, "grid_compute": args.grid_compute,
           "results": res, "wall_s": round(time.time() - t_all, 1), "home": str(home)}
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
    print(f"wall time {doc['wall_s']:.0f}s; figures in {args.out}")


if __name__ == "__main__":
    main()
