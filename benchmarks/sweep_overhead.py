"""The platform's own overhead: fixed-work trials run back to back in one process vs. as a zsexp sweep.

    python benchmarks/sweep_overhead.py [--trials 8] [--work-s 2] [--concurrency 1]
    python benchmarks/sweep_overhead.py --trials 4 --work-s 30 --concurrency 2     # the >= 30 s case
    ZSEXP_SIMULATE_GPUS=16 python benchmarks/sweep_overhead.py --scaling --gpus 16 --gpus-per-trial 1

Every trial does the same work: ZSCRGAN on synthetic-tiny with a fixed E-M schedule (the number of
updates is calibrated so that one trial takes ``--work-s`` seconds on one thread), evaluated after
every round as a sweep trial is.  The sweep goes through ``zsexp.search.sweep.run_sweep`` with a
random sampler over a parameter that does not change the work (alpha), no early stopping, a
throw-away SQLite MLflow store and storage in a temporary directory.

Printed: the back-to-back time, the ideal sweep time (work / concurrency), the sweep's wall time
(``tuner.fit``, Ray start excluded and also shown), the per-trial overhead in seconds and the
ratio sweep / ideal.  ``--profile`` adds where the overhead goes: the driver under cProfile (MLflow
writes, the callback's durable record, Tune's experiment snapshot, the searcher, checkpoint
bookkeeping), per trial, and the trials' own time outside training and evaluation (checkpoint writes,
the report round trip), from the timings every trial reports.  ``--scaling`` instead runs quick
trials on a (simulated) GPU budget and prints how many ran at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROUNDS = 5


def _fixed(updates: int) -> dict:
    return {"em_schedule": "fixed", "updates_per_step": updates, "em_iterations": ROUNDS}


def one_trial(updates: int, seed: int) -> float:
    from zsexp.data import load_dataset
    from zsexp.models import build_model, make_config

    data = load_dataset("synthetic-tiny")
    cfg = make_config("zscrgan", data, ("bench", _fixed(updates)))
    t0 = time.perf_counter()
    model = build_model("zscrgan", cfg, data, seed=seed)
    for _ in range(ROUNDS):
        model.train_round()
        model.evaluate("val")
    return time.perf_counter() - t0


def calibrate(work_s: float) -> int:
    one_trial(5, 0)                               # warm up: imports, dataset cache
    t = one_trial(40, 0) / (40 * ROUNDS)
    return max(1, int(work_s / ROUNDS / t))


def write_space(path: Path, updates: int, max_rounds: int = ROUNDS) -> None:
    path.write_text(yaml.safe_dump({
        "model": "zscrgan", "objective": {"metric": "precision@50", "mode": "max"},
        "fidelity": {"max_rounds": max_rounds, "grace_rounds": 1}, "sampler": {"name": "random"},
        "scheduler": "none", "fixed": _fixed(updates),
        "params": {"alpha": {"type": "uniform", "low": 0.4, "high": 0.6}}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--work-s", type=float, default=2.0, help="seconds of work per trial (one thread)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--scaling", action="store_true", help="count concurrent trials on a (simulated) GPU budget")
    ap.add_argument("--gpus", type=float, default=16)
    ap.add_argument("--gpus-per-trial", type=float, default=1.0)
    ap.add_argument("--profile", action="store_true", help="where the overhead goes (driver cProfile, trial timings)")
    args = ap.parse_args()

    from zsexp.search.sweep import SweepOptions, run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="zsexp-bench-"))
    os.environ["ZSEXP_HOME"] = str(tmp / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    torch.set_num_threads(1)          # a sweep trial gets one CPU; measure the same work on one thread
    updates = calibrate(args.work_s) if not args.scaling else 40
    space = tmp / "space.yaml"
    write_space(space, updates)
    if args.scaling:
        t0 = time.perf_counter()
        s = run_sweep(SweepOptions(model="zscrgan", space=str(space), trials=args.trials, gpus=args.gpus,
                                   gpus_per_trial=args.gpus_per_trial, cpus_per_trial=0.01, name="scaling",
                                   progress_every_s=30))
        print(json.dumps({"gpus": args.gpus, "gpus_per_trial": args.gpus_per_trial, "trials": args.trials,
                          "expected_concurrency": int(args.gpus / args.gpus_per_trial),
                          "peak_concurrency": s["peak_concurrency"], "wall_s": round(time.perf_counter() - t0, 1)}))
        return
    work = [one_trial(updates, seed) for seed in range(args.trials)]
    back_to_back = sum(work)
    ideal = back_to_back / args.concurrency
    opts = SweepOptions(model="zscrgan", space=str(space), trials=args.trials, cpus_per_trial=1,
                        max_concurrent=args.concurrency, name="overhead", progress_every_s=1e9)
    t0 = time.perf_counter()
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        s = prof.runcall(run_sweep, opts)
    else:
        s = run_sweep(opts)
    total = time.perf_counter() - t0
    per_trial = (s["wall_s"] - ideal) / (args.trials / args.concurrency)
    print()
    print(f"trials {args.trials}, concurrency {args.concurrency}, {updates} updates/round x {ROUNDS} rounds")
    print(f"work per trial (one process, one thread): {back_to_back / args.trials:.2f} s; "
          f"back to back {back_to_back:.1f} s")
    print(f"ideal sweep time (work / concurrency): {ideal:.1f} s")
    print(f"sweep tuner.fit wall time: {s['wall_s']:.1f} s (with Ray start and MLflow set-up: {total:.1f} s)")
    print(f"per-trial overhead: {per_trial:.2f} s; sweep / ideal = {s['wall_s'] / ideal:.3f}")
    if args.profile:
        profile_report(prof, args.trials, tmp / "home" / "sweeps" / "overhead")


# driver functions whose cumulative time is the platform's (module path fragment, function name)
DRIVER_PARTS = {
    "MLflow writes (callback queue flush)": [("zsexp/search/callback.py", "_flush")],
    "callback's durable record (JSON mirror, markers)": [("zsexp/search/callback.py", "_save"),
                                                         ("zsexp/search/callback.py", "write_marker")],
    "Tune experiment snapshot": [("tune/execution/tune_controller.py", "checkpoint")],
    "searcher (Optuna suggest / tell)": [("zsexp/search/optuna_search.py", "suggest"),
                                         ("zsexp/search/optuna_search.py", "on_trial_complete"),
                                         ("zsexp/search/optuna_search.py", "on_trial_result")],
    "Tune result / checkpoint bookkeeping": [("tune/execution/tune_controller.py", "_process_trial_result"),
                                             ("tune/execution/tune_controller.py", "_process_trial_save")],
    "trial start / reuse of an actor": [("tune/execution/tune_controller.py", "_schedule_trial_actor"),
                                        ("tune/execution/tune_controller.py", "_schedule_trial_reset")],
    "sweep set-up before tuner.fit (baseline, MLflow parent, Tuner)": [("zsexp/search/sweep.py", "run_sweep")],
    "tuner.fit": [("ray/tune/tuner.py", "fit")],
}


def profile_report(prof, trials: int, sweep_dir: Path) -> None:
    import csv
    import pstats

    st = pstats.Stats(prof).stats           # (file, line, name) -> (cc, nc, tt, ct, callers)

    def cum(parts: list[tuple[str, str]]) -> float:
        return sum(v[3] for (f, _, n), v in st.items() for frag, fn in parts if n == fn and frag in f)

    fit = cum(DRIVER_PARTS["tuner.fit"])
    print("\nwhere the driver's time goes (cProfile, cumulative seconds; per trial; nested items overlap):")
    for label, parts in DRIVER_PARTS.items():
        t = cum(parts)
        if label.startswith("sweep set-up"):
            t -= fit
        print(f"  {label}: {t:.2f} s ({t / trials:.3f} s per trial)")
    rows = []
    for f in sweep_dir.glob("train_trial_*/progress.csv"):
        with open(f) as fh:
            rows += list(csv.DictReader(fh))
    if rows and rows[0].get("time_train_s") not in (None, ""):
        def total(key: str) -> float:
            return sum(float(r[key]) for r in rows if r.get(key) not in (None, ""))
        iters, train, ev, ck = (total("time_this_iter_s"), total("time_train_s"), total("time_eval_s"),
                                total("time_checkpoint_s"))
        n_tr = len({r["trial_id"] for r in rows})
        print(f"inside the trials ({n_tr} trials, {len(rows)} rounds; seconds per trial): round-to-round "
              f"{iters / n_tr:.3f}, training {train / n_tr:.3f}, evaluation {ev / n_tr:.3f}, checkpoint write "
              f"{ck / n_tr:.3f}, rest (report round trip, waiting for the driver) "
              f"{(iters - train - ev - ck) / n_tr:.3f}")


if __name__ == "__main__":
    main()
