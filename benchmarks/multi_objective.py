"""Multi-objective sweeps: the hypervolume a multi-objective sampler reaches against random search at equal
compute, and what the compute accounting costs.

    OMP_NUM_THREADS=1 python benchmarks/multi_objective.py                   # 3 seeds x 12 trials
    OMP_NUM_THREADS=1 python benchmarks/multi_objective.py --seeds 5 --trials 20 --samplers tpe nsga2 random

* ``hypervolume``: ZSCRGAN on synthetic-tiny with two objectives, validation precision@50 (max) and the
  trial's ``compute_cpu_s`` (min; the searched ``updates_per_step`` and ``em_iterations`` decide most of it),
  swept with each sampler for the same number of trials and seeds (equal compute budget in trials).  The
  hypervolume of each sweep's front is measured in one normalised frame shared by every sweep of a seed:
  precision as a fraction of 100, CPU-seconds divided by the largest any sweep of that seed spent, the
  reference point (0 precision, 1.1 x that largest cost).  Printed: every sweep's figure and the median
  over seeds per sampler.
* ``accounting``: the cost of one ``ComputeClock.tick()`` in a trial and of the driver's sum of a round,
  timed over many calls, against the mean round of the sweeps above: a ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPACE = {"model": "zscrgan", "scheduler": "none",
         "objective": [{"metric": "precision@50", "mode": "max"}, {"metric": "compute_cpu_s", "mode": "min"}],
         "fixed": {"em_schedule": "fixed"},
         "params": {"alpha": {"type": "uniform", "low": 0.1, "high": 2.0},
                    "lr_g": {"type": "loguniform", "low": 1.0e-5, "high": 1.0e-3},
                    "updates_per_step": {"type": "int", "low": 5, "high": 80},
                    "em_iterations": {"type": "int", "low": 1, "high": 4}}}


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (both coordinates minimised) inside the box below ``ref``."""
    pts = sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1])
    area, best_y = 0.0, ref[1]
    for x, y in pts:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


ROUNDS: list[float] = []      # every trial's mean round wall time (its compute_wall_s over its rounds)


def sweep(work: Path, sampler: str, seed: int, trials: int) -> list[tuple[float, float]]:
    import optuna

    from zsexp.search.optuna_search import journal_storage

    space = work / f"space-{sampler}.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "sampler": {"name": sampler}}))
    name = f"mo-{sampler}-{seed}"
    env = {**os.environ, "ZSEXP_HOME": str(work / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--space", str(space), "--trials",
                          str(trials), "--seed", str(seed), "--name", name, "--max-concurrent", "2",
                          "--progress-every", "0"], env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    study = optuna.load_study(study_name=name, storage=journal_storage(work / "home" / "sweeps" / name))
    ROUNDS.extend(t.user_attrs["compute_wall_s"] / t.params["em_iterations"] for t in study.trials
                  if t.values and "compute_wall_s" in t.user_attrs)
    return [(t.values[0], t.values[1]) for t in study.trials if t.values]


def accounting(rounds: list[float]) -> None:
    from zsexp.search import compute

    clock, n = compute.ComputeClock(0.5), 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        clock.tick()
    tick = (time.perf_counter() - t0) / n
    result = {f"round_{k}": 0.1 for k in compute.KEYS}
    t0 = time.perf_counter()
    total = None
    for _ in range(n):
        total = compute.add(total, compute.round_spend(result))
    driver = (time.perf_counter() - t0) / n
    mean_round = statistics.mean(rounds) if rounds else float("nan")
    print(f"accounting: tick {tick * 1e6:.1f} us in the trial, {driver * 1e6:.1f} us in the driver per round; "
          f"a mean round here takes {mean_round:.3f} s of wall: {(tick + driver) / mean_round:.1e} of it")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--samplers", nargs="+", default=["tpe", "random"])
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zsexp-mobench-"))
    hv: dict[str, list[float]] = {s: [] for s in a.samplers}
    for seed in range(a.seeds):
        runs = {s: sweep(work, s, seed, a.trials) for s in a.samplers}
        worst = max(c for pts in runs.values() for _, c in pts)
        for s, pts in runs.items():
            frame = [(-(q / 100.0), c / worst) for q, c in pts]          # both minimised, in [-1, 0] x [0, 1]
            hv[s].append(hypervolume_2d(frame, (0.0, 1.1)))
            print(f"  seed {seed} {s:7}: hypervolume {hv[s][-1]:.4f} ({len(pts)} trials)", flush=True)
    print(f"hypervolume, {a.trials} trials per sweep, median over {a.seeds} seeds (higher is better):")
    for s, values in hv.items():
        print(f"  {s:7}: median {statistics.median(values):.4f} (range {min(values):.4f}-{max(values):.4f})")
    accounting(ROUNDS)


if __name__ == "__main__":
    main()
