"""Does the driver's cost per trial stay flat as a sweep grows?

    OMP_NUM_THREADS=1 python benchmarks/sweep_scale.py                    # 16, 64, 256, 1024 trials
    OMP_NUM_THREADS=1 python benchmarks/sweep_scale.py --sizes 16 64 --no-kill
    OMP_NUM_THREADS=1 python benchmarks/sweep_scale.py --long             # adds 4096
    ZSEXP_SIMULATE_GPUS=64 OMP_NUM_THREADS=1 python benchmarks/sweep_scale.py --simulate 64

Every trial is the same near-zero work: ZSCRGAN on synthetic-tiny, one optimiser update per round,
5 rounds, each followed by validation (``sweep_overhead.trial_rounds``).  Each size runs through zsexp
(``run_sweep``: searcher, MLflow child runs on a SQLite store, checkpoints, durable record, signed
state) and through a plain ``tune.Tuner`` doing the same rounds (``sweep_overhead.bare_trial``),
``--concurrency`` trials at once, each on its own fresh local Ray.

Per size it prints: the wall time of ``tuner.fit`` for both; zsexp's cost beyond bare Tune per trial
(the difference over the number of trial slots, trials / concurrency); the driver process's CPU time
per trial; the mean time of one Tune snapshot (``TuneController.checkpoint``), of one write of the
durable progress record and of one signing of Tune's files, with how often each ran; the sizes of the
sweep's files; the time of ``zsexp status`` (in this process, and as a new process: what a user waits
for), of the ranking that starts ``zsexp select`` (``sweep_trials`` + ``rank_configs``), and, at the
largest size, of ``zsexp resume`` after the driver was killed half-way (up to the moment the restored
Tuner starts; then it runs to the end and the benchmark checks exactly N trials, one MLflow run each).

``--simulate N`` instead runs 4 x N trials on a simulated budget of N GPUs at 0.25 GPU and 0.01 CPU
per trial (``ZSEXP_SIMULATE_GPUS``), so that many trials report at once, and prints how long the
driver spends per reported round in the first and the last quarter of the sweep: a driver that keeps
up spends the same.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_overhead import ROUNDS, bare_sweep, write_space  # noqa: E402

UPDATES = 1                      # one optimiser update per round: the driver's work dominates


class Meter:
    """Counts the calls of a method and their total wall time (patched onto its class)."""

    def __init__(self, owner: type, name: str):
        self.owner, self.name, self.orig = owner, name, getattr(owner, name)
        self.n, self.total, self.samples = 0, 0.0, []
        meter = self

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return meter.orig(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                meter.n += 1
                meter.total += dt
                meter.samples.append((time.perf_counter(), dt))
        setattr(owner, name, timed)

    def restore(self) -> None:
        setattr(self.owner, self.name, self.orig)

    def mean_ms(self) -> float:
        return 1000 * self.total / self.n if self.n else 0.0


def meters() -> dict[str, Meter]:
    from ray.tune.execution.tune_controller import TuneController

    from zsexp.search.callback import MlflowSweepCallback

    return {"snapshot": Meter(TuneController, "checkpoint"), "progress": Meter(MlflowSweepCallback, "_save"),
            "signing": Meter(MlflowSweepCallback, "sign_snapshot"),
            "result": Meter(MlflowSweepCallback, "on_trial_result")}


def file_sizes(d: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in d.iterdir():
        if p.is_file():
            key = p.name.split("-20")[0] if "-20" in p.name else p.name       # drop Tune's session stamp
            out[key] = out.get(key, 0) + p.stat().st_size
    out["trial dirs"] = sum(1 for p in d.iterdir() if p.is_dir())
    return out


def zsexp_arm(n: int, concurrency: int, space: Path) -> dict:
    from zsexp.search.sweep import SweepOptions, run_sweep

    name = f"scale-{n}"
    ms = meters()
    cpu0 = time.process_time()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            s = run_sweep(SweepOptions(model="zscrgan", space=str(space), trials=n, cpus_per_trial=1,
                                       max_concurrent=concurrency, name=name, progress_every_s=1e9))
    finally:
        for m in ms.values():
            m.restore()
    cpu = time.process_time() - cpu0
    return {"name": name, "wall": s["wall_s"], "cpu_per_trial": cpu / n, "meters": ms}


def time_status(name: str) -> tuple[float, float]:
    from zsexp.cli import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["status", name]) == 0
    inproc = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zsexp.cli", "status", name], check=True, capture_output=True)
    return inproc, time.perf_counter() - t0


def time_ranking(name: str) -> float:
    from zsexp.search.space import parse_space
    from zsexp.search.status import sweep_trials
    from zsexp.search.storage import read_meta
    from zsexp.selection import rank_configs

    t0 = time.perf_counter()
    meta = read_meta(name, None)
    space = parse_space(meta.space, meta.space_source, meta.model)
    ranked = rank_configs(sweep_trials(meta, space), space)
    assert ranked
    return time.perf_counter() - t0


def kill_and_resume(n: int, concurrency: int, space: Path) -> dict:
    """A sweep of ``n`` trials killed when trial n/2 finishes (driver and its Ray, SIGKILL), then resumed."""
    from ray import tune

    from zsexp.cli import main
    from zsexp.search.storage import read_meta
    from zsexp.tracking import client
    from zsexp.ui_links import sweep_filter

    name = f"kill-{n}"
    env = {**os.environ, "ZSEXP_FAULT_KILL": f"trial_complete:{n // 2}"}
    proc = subprocess.run([sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--space", str(space),
                           "--trials", str(n), "--name", name, "--max-concurrent", str(concurrency),
                           "--progress-every", "1000000"], env=env, capture_output=True, text=True,
                          start_new_session=True)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    clock: dict[str, float] = {}
    fit = tune.Tuner.fit

    def timed_fit(self):
        clock["fit"] = time.perf_counter()
        return fit(self)
    tune.Tuner.fit = timed_fit
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["resume", name]) == 0
    finally:
        tune.Tuner.fit = fit
    total = time.perf_counter() - t0
    meta = read_meta(name, None)
    runs = client(meta.tracking_uri).search_runs([meta.experiment_id], filter_string=sweep_filter(meta.name),
                                                 max_results=10 * n)
    ids = [r.data.tags["zsexp.trial_id"] for r in runs]
    return {"until_fit": clock["fit"] - t0, "total": total, "runs": len(runs), "unique": len(set(ids)),
            "exactly_n": len(runs) == n and len(set(ids)) == n}


def simulate(gpus: int, space: Path) -> None:
    from zsexp.search.sweep import SweepOptions, run_sweep

    ms = meters()
    n = 4 * gpus
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            s = run_sweep(SweepOptions(model="zscrgan", space=str(space), trials=n, gpus=gpus, gpus_per_trial=0.25,
                                       cpus_per_trial=0.01, name=f"sim-{gpus}", progress_every_s=1e9))
    finally:
        for m in ms.values():
            m.restore()
    res = ms["result"].samples
    q = max(1, len(res) // 4)
    first = statistics.mean(dt for _, dt in res[:q]) * 1000
    last = statistics.mean(dt for _, dt in res[-q:]) * 1000
    print(f"simulated {gpus} GPUs at 0.25 GPU per trial: {n} trials, peak {s['peak_concurrency']} at once, "
          f"tuner.fit {s['wall_s']:.1f} s; driver per reported round: {first:.2f} ms in the first quarter, "
          f"{last:.2f} ms in the last")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    ap.add_argument("--long", action="store_true", help="also 4096 trials")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--no-bare", action="store_true", help="skip the bare Tune arm")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill and resume at the largest size")
    ap.add_argument("--simulate", type=int, default=0, metavar="GPUS", help="the simulated-cluster run instead")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="zsexp-scale-"))
    os.environ["ZSEXP_HOME"] = str(tmp / "home")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    space = tmp / "space.yaml"
    write_space(space, UPDATES)
    if args.simulate:
        simulate(args.simulate, space)
        return
    sizes = [*args.sizes, *([4096] if args.long else [])]
    print(f"near-zero-work trials ({UPDATES} update x {ROUNDS} rounds), {args.concurrency} at once; "
          f"storage {tmp}")
    head = ("trials", "zsexp fit s", "bare fit s", "beyond bare /trial s", "driver CPU /trial s",
            "snapshot ms (n)", "progress write ms (n)", "signing ms (n)", "status s (process)", "ranking s")
    print(" | ".join(head))
    rows = []
    for n in sizes:
        z = zsexp_arm(n, args.concurrency, space)
        bare = None if args.no_bare else bare_sweep(UPDATES, n, args.concurrency, tmp / f"bare-{n}")[0]
        slots = n / args.concurrency
        st_in, st_proc = time_status(z["name"])
        rank = time_ranking(z["name"])
        m = z["meters"]
        row = {"trials": n, "zsexp_fit_s": round(z["wall"], 1), "bare_fit_s": bare and round(bare, 1),
               "beyond_bare_per_trial_s": bare and round((z["wall"] - bare) / slots, 3),
               "driver_cpu_per_trial_s": round(z["cpu_per_trial"], 3),
               "snapshot_ms": round(m["snapshot"].mean_ms(), 2), "snapshots": m["snapshot"].n,
               "progress_write_ms": round(m["progress"].mean_ms(), 2), "progress_writes": m["progress"].n,
               "signing_ms": round(m["signing"].mean_ms(), 2), "signings": m["signing"].n,
               "status_s": round(st_in, 2), "status_process_s": round(st_proc, 2), "ranking_s": round(rank, 2),
               "files": file_sizes(tmp / "home" / "sweeps" / z["name"])}
        rows.append(row)
        print(" | ".join(str(x) for x in (
            n, row["zsexp_fit_s"], row["bare_fit_s"], row["beyond_bare_per_trial_s"], row["driver_cpu_per_trial_s"],
            f"{row['snapshot_ms']} ({row['snapshots']})", f"{row['progress_write_ms']} ({row['progress_writes']})",
            f"{row['signing_ms']} ({row['signings']})", f"{row['status_s']} ({row['status_process_s']})",
            row["ranking_s"])), flush=True)
    print("\nsweep files (bytes; Tune's session-stamped files summed by kind):")
    for row in rows:
        print(f"  {row['trials']}: {json.dumps(row['files'])}")
    if not args.no_kill:
        n = sizes[-1]
        k = kill_and_resume(n, args.concurrency, space)
        print(f"\nkill at trial {n // 2} of {n}, then `zsexp resume`: {k['until_fit']:.1f} s until the restored "
              f"Tuner runs (snapshot check, reconciliation, restore), {k['total']:.1f} s to the end; "
              f"{k['runs']} MLflow runs, {k['unique']} trial ids: exactly N {'yes' if k['exactly_n'] else 'NO'}")
    print("\njson: " + json.dumps(rows))


if __name__ == "__main__":
    main()
