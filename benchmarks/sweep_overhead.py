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
ratio sweep / ideal.  ``--profile`` adds where the time beyond the ideal goes, split into fixed
costs per sweep (Tune's set-up, the first worker process, the end) and marginal costs per trial
(start-up in a reused worker, the report round trip of every round, the finish, the gap to the next
trial, training slowed by sharing the CPUs with the driver), from the driver's MLflow timestamps and
the timings every trial reports; and projects sweep / ideal for longer sweeps.  ``--bare`` also runs the
same trials through a plain ``tune.Tuner`` (a function trainable that reports every round, one CPU per
trial, ``reuse_actors``; no zsexp driver, searcher, MLflow or checkpoints): the floor that Ray Tune
itself sets on this machine, so that the zsexp part of the overhead is the difference.  ``--scaling``
instead runs quick trials on a (simulated) GPU budget and prints how many ran at the same time.
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


def trial_rounds(updates: int, seed: int):
    """The fixed work of one trial: build the model, then ROUNDS rounds each followed by validation;
    yields each round's validation metrics (the sweep's trainable does the same per round)."""
    from zsexp.data import load_dataset
    from zsexp.models import build_model, make_config

    data = load_dataset("synthetic-tiny")
    cfg = make_config("zscrgan", data, ("bench", _fixed(updates)))
    model = build_model("zscrgan", cfg, data, seed=seed)
    for _ in range(ROUNDS):
        model.train_round()
        yield model.evaluate("val")


def one_trial(updates: int, seed: int) -> float:
    t0 = time.perf_counter()
    for _ in trial_rounds(updates, seed):
        pass
    return time.perf_counter() - t0


def bare_trial(config: dict) -> None:
    """One trial of the same work as :func:`one_trial`, inside a plain Ray Tune function trainable."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    for r, val in enumerate(trial_rounds(config["updates"], config["seed"]), start=1):
        tune.report({"round": r, **val})


def bare_sweep(updates: int, trials: int, concurrency: int, storage: Path) -> tuple[float, float]:
    """Wall time of ``tuner.fit`` and of Ray's start for the bare Tune run (its own Ray instance)."""
    import ray
    from ray import tune

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray_start = time.perf_counter() - t0
    try:
        tuner = tune.Tuner(tune.with_resources(bare_trial, {"cpu": 1}),
                           param_space={"updates": updates, "seed": tune.grid_search(list(range(trials)))},
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
                           run_config=tune.RunConfig(name="bare", storage_path=str(storage), verbose=0))
        t0 = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - t0, ray_start
    finally:
        ray.shutdown()


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
    ap.add_argument("--profile", action="store_true", help="where the overhead goes (driver timestamps, trial timings)")
    ap.add_argument("--bare", action="store_true",
                    help="also run the same trials through a plain tune.Tuner (the floor)")
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
    fit_clock: dict[str, float] = {}
    if args.profile:                  # the clock around tuner.fit, for the timeline
        from ray import tune

        fit = tune.Tuner.fit

        def timed_fit(self):
            fit_clock["start"] = time.time()
            try:
                return fit(self)
            finally:
                fit_clock["end"] = time.time()
        tune.Tuner.fit = timed_fit
    t0 = time.perf_counter()
    try:
        s = run_sweep(opts)
    finally:
        if args.profile:
            tune.Tuner.fit = fit      # only the sweep's fit is timed, not --bare's
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
        parts = timeline(tmp / "home" / "sweeps" / "overhead", fit_clock["start"], fit_clock["end"],
                         back_to_back / args.trials, ROUNDS)
        print_timeline(parts, args.trials, args.concurrency, back_to_back / args.trials, s["wall_s"])
    if args.bare:
        bare_wall, bare_ray = bare_sweep(updates, args.trials, args.concurrency, tmp / "bare")
        print(f"bare Ray Tune (plain tune.Tuner, same trials, no zsexp/MLflow/checkpoints): tuner.fit "
              f"{bare_wall:.1f} s (Ray start {bare_ray:.1f} s); bare / ideal = {bare_wall / ideal:.3f}; "
              f"zsexp beyond bare Tune: {s['wall_s'] - bare_wall:.1f} s = "
              f"{(s['wall_s'] - bare_wall) / (args.trials / args.concurrency):.2f} s per trial")


def timeline(sweep_dir: Path, fit_start: float, fit_end: float, work_per_trial: float, rounds: int) -> dict:
    """Where the sweep's wall time goes, from clocks the platform already keeps: the driver's MLflow
    timestamps (child run start and end, every round's metrics) and each trial's own timings of a round
    (``time_train_s``, ``time_eval_s``, ``time_checkpoint_s``).  No profiler slows anything down."""
    import csv
    import statistics as st

    from zsexp.search.storage import read_meta
    from zsexp.tracking import client
    from zsexp.ui_links import sweep_filter

    meta = read_meta(sweep_dir.name, str(sweep_dir.parent))
    c = client(meta.tracking_uri)
    runs = c.search_runs([meta.experiment_id], filter_string=sweep_filter(meta.name), max_results=1000)
    inside: dict[str, dict[int, float]] = {}
    for f in sweep_dir.glob("train_trial_*/progress.csv"):
        with open(f) as fh:
            for r in csv.DictReader(fh):
                inside.setdefault(r["trial_id"], {})[int(r["training_iteration"])] = sum(
                    float(r[k]) for k in ("time_train_s", "time_eval_s", "time_checkpoint_s"))
    trials = []
    for run in runs:
        tid = run.data.tags["zsexp.trial_id"]
        ts = {m.step: m.timestamp / 1000 for m in c.get_metric_history(run.info.run_id, "updates_done")}
        trials.append({"tid": tid, "start": run.info.start_time / 1000, "end": run.info.end_time / 1000, "ts": ts,
                       "inside": inside.get(tid, {})})
    trials.sort(key=lambda t: t["start"])
    first_round = [t["ts"][1] - t["start"] - t["inside"][1] for t in trials]      # start-up of each trial
    round_trip = [t["ts"][k] - t["ts"][k - 1] - t["inside"][k] for t in trials for k in range(2, rounds + 1)]
    finish = [t["end"] - t["ts"][max(t["ts"])] for t in trials]
    gaps = [b["start"] - a["end"] for a, b in zip(trials, trials[1:], strict=False)]
    compute = [sum(t["inside"].values()) for t in trials]
    steady_start = st.median(first_round[1:]) if len(first_round) > 1 else first_round[0]
    return {
        "before the first trial (Tune set-up, first worker process)": trials[0]["start"] - fit_start,
        "first trial's start-up beyond a warm one (imports, data in a new process)": first_round[0] - steady_start,
        "after the last trial (Tune's end, final snapshot)": fit_end - trials[-1]["end"],
        "per trial: start-up in the worker (actor reset, config, model)": steady_start,
        "per trial: report round trips (driver: MLflow, snapshot, checkpoint)": st.median(round_trip) * (rounds - 1),
        "per trial: finish (driver: MLflow finish, marker, artifact)": st.median(finish),
        "per trial: gap to the next trial (searcher, scheduling)": st.median(gaps) if gaps else 0.0,
        "per trial: training slower inside the sweep than back to back": st.median(compute) - work_per_trial,
    }


def print_timeline(parts: dict, trials: int, concurrency: int, work: float, wall: float) -> None:
    fixed = sum(v for k, v in parts.items() if not k.startswith("per trial"))
    marginal = sum(v for k, v in parts.items() if k.startswith("per trial"))
    print("\nwhere the sweep's time goes (driver timestamps and the trials' own timings; medians per trial):")
    for k, v in parts.items():
        print(f"  {k}: {v:.3f} s")
    beyond = wall - work * trials / concurrency
    print(f"fixed per sweep: {fixed:.2f} s; marginal per trial: {marginal:.3f} s "
          f"(accounted {fixed + marginal * trials / concurrency:.1f} s of the {beyond:.1f} s beyond the ideal)")
    for n in (8, 32, 128):
        ideal = n * work / concurrency
        print(f"  projected sweep / ideal with {n} trials of {work:.1f} s: "
              f"{(fixed + n * (work + marginal) / concurrency) / ideal:.3f}")


if __name__ == "__main__":
    main()
