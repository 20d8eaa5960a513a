"""Does the product's search pay for itself?  Grid vs random vs TPE vs TPE + ASHA at equal compute.

    python benchmarks/search_efficiency.py                # ZSCRGAN, 5 seeds: 1,650 s on this 2-core machine
    python benchmarks/search_efficiency.py --model cmgan  # CM-GAN: 697 s
    python benchmarks/search_efficiency.py --smoke          # checks the pipeline in minutes: not a measurement
    python benchmarks/search_efficiency.py --from-json search-efficiency/search_efficiency_raw.json \
        --rerun tpe+asha --grace 180 --out grace180      # one method again with another ASHA grace period

Every trial is real training through the real ``zsexp search`` path (``run_sweep``: a local Ray shared by
all sweeps, Optuna, ASHA, MLflow on a SQLite file and Tune storage in a temporary directory), on
synthetic-tiny with its narrow widths.  Methods, each run once per seed with the same seed list (the
sweep's ``--seed`` is both the sampler's seed and every trial's model seed):

* **grid** -- the paper-style grid (ZSCRGAN §3.3.3 tuned alpha, beta, lambda "using grid-search"; CM-GAN
  tried lambda_c in {1, 5, 10}), :data:`SPACES` ``grid``, every configuration at the full budget, through
  the product's ``sampler: grid`` (Optuna's GridSampler, order shuffled by the seed);
* **random** -- random search over the ranges at the full budget;
* **tpe** -- Optuna's TPE at the full budget;
* **tpe+asha** -- the product's default: TPE with ASHA on optimiser updates (``fidelity.unit: updates``).

**Compute** is counted in optimiser updates actually run, as ASHA counts them (a round's updates vary
with the searched ``updates_per_step`` / ``iters_per_step``, so rounds are not comparable), pruned and
failed trials included; rounds and wall time are reported beside it.  The unit of the x axis is the
grid's compute of the same seed (1.0 = the whole grid).  The order of events is the driver's: each
trial's rounds are read back from its MLflow child run (the callback logs every round with the driver's
timestamp).  A trial that diverges fails in the round it diverges in; that round's updates are not
reported and not counted (the number of failed trials per sweep is printed).

**Target** (honest about noise): the grid's best configuration is the one with the best mean over seeds
of its best-round validation objective; the grid's runs of that configuration at the N seeds are its
retraining with N model seeds, and their standard deviation is the seed spread.  The grid optimum is the
median over seeds of each seed's grid best, and the target is that value minus the seed spread
(plus it, for a metric to minimise).  A method reaches the grid optimum when its best trial so far meets
the target.

**Test value of each pick**: ``zsexp select SWEEP --k 1 --seeds S`` -- the configuration each method's
sweep would ship, retrained with S seeds on train + val for its best round and measured on the test
classes once; the task's baseline (fitted on train + val) and chance are printed beside it.

Printed: the target, the anytime best validation objective against compute (median and quartiles over
seeds), the success rate within a quarter of the grid's compute, compute and wall time to the target,
the paired comparison of TPE + ASHA with random search at a quarter of the grid's compute (Wilcoxon
signed-rank over seeds), the test value of each method's pick.  Saved in ``--out``:
``search_efficiency.png`` (anytime curves), ``search_efficiency.json`` (every printed number) and
``search_efficiency_raw.json`` (every round of every trial, the input of ``--from-json``).  The last line is exactly
``TPE+ASHA reaches the grid optimum with R of the grid's compute (median over N seeds)``; a seed whose
TPE + ASHA never meets the target counts as infinite compute (the line then says ``inf``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

METHODS = ("grid", "random", "tpe", "tpe+asha")
FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)

# Per model: fixed keys, the grid, the ranges of the other methods (covering the grid), ASHA's fidelity.
SPACES: dict[str, dict[str, Any]] = {
    "zscrgan": {
        "objective": {"metric": "precision@50", "mode": "max"},
        # r_form: hinge, so that lambda acts as the margin (with eq. 15's linear R it cannot change training)
        "fixed": {"em_schedule": "fixed", "em_iterations": 10, "r_form": "hinge"},
        "grid": {"alpha": [0.0, 0.5, 2.0], "beta": [0.5, 2.0, 8.0], "lam": [0.5, 2.0, 8.0],
                 "updates_per_step": [30, 90]},
        "ranges": {"alpha": {"type": "uniform", "low": 0.0, "high": 2.0},
                   "beta": {"type": "loguniform", "low": 0.5, "high": 8.0},
                   "lam": {"type": "loguniform", "low": 0.5, "high": 8.0},
                   "updates_per_step": {"type": "int", "low": 30, "high": 90}},
        "fidelity": {"unit": "updates", "max_rounds": 10, "grace_updates": 100, "max_updates": 900,
                     "reduction_factor": 3},
    },
    "cmgan": {
        "objective": {"metric": "zsl/mfr", "mode": "min"},
        "fixed": {"slices_per_step": 2, "early_stop": False},
        "grid": {"lambda_c[0]": [1.0, 5.0, 10.0], "lambda_c[1]": [1.0, 5.0, 10.0], "gamma": [0.25, 0.5, 1.0],
                 "max_steps": [2, 3]},
        "ranges": {"lambda_c[0]": {"type": "loguniform", "low": 1.0, "high": 10.0},
                   "lambda_c[1]": {"type": "loguniform", "low": 1.0, "high": 10.0},
                   "gamma": {"type": "uniform", "low": 0.25, "high": 1.0},
                   "max_steps": {"type": "int", "low": 2, "high": 3}},
        "fidelity": {"unit": "updates", "max_rounds": 6, "grace_updates": 100, "max_updates": 900,
                     "reduction_factor": 3},
    },
}


def space_file(model: str, method: str, out: Path) -> Path:
    """The search-space YAML of one method (what a user would write to run it with ``zsexp search``)."""
    s = SPACES[model]
    raw: dict[str, Any] = {"model": model, "objective": s["objective"], "fixed": s["fixed"],
                           "fidelity": s["fidelity"]}
    if method == "grid":
        raw |= {"sampler": {"name": "grid"}, "scheduler": "none",
                "params": {k: {"type": "categorical", "choices": v} for k, v in s["grid"].items()}}
    else:
        raw |= {"sampler": {"name": "random"} if method == "random" else {"name": "tpe", "n_startup_trials": 4},
                "scheduler": "asha" if method == "tpe+asha" else "none", "params": s["ranges"]}
    path = out / f"space-{model}-{method.replace('+', '-')}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def grid_size(model: str) -> int:
    return math.prod(len(v) for v in SPACES[model]["grid"].values())


# --------------------------------------------------------------------------- reading a sweep back
def sweep_events(name: str, metric_key: str) -> list[dict[str, Any]]:
    """Every reported round of the sweep's trials in the driver's order: time, trial, round, the
    round's updates, the objective and the trial's outcome."""
    from zsexp.search.storage import read_meta
    from zsexp.tracking import client
    from zsexp.ui_links import sweep_filter

    meta = read_meta(name, None)
    c = client(meta.tracking_uri)
    runs = c.search_runs([meta.experiment_id], filter_string=sweep_filter(name), max_results=5000)
    events = []
    for run in runs:
        upd = {m.step: (m.value, m.timestamp) for m in c.get_metric_history(run.info.run_id, "updates_done")}
        obj = {m.step: m.value for m in c.get_metric_history(run.info.run_id, metric_key)}
        prev = 0.0
        for step in sorted(upd):
            value, ts = upd[step]
            events.append({"ts": ts / 1000.0, "trial": run.data.tags.get("zsexp.trial_id", run.info.run_id),
                           "round": step, "updates": value - prev, "value": obj.get(step),
                           "outcome": run.data.tags.get("zsexp.outcome")})
            prev = value
    return sorted(events, key=lambda e: (e["ts"], e["trial"], e["round"]))


def anytime(events: list[dict[str, Any]], mode: str, grid_compute: float) -> list[tuple[float, float, float]]:
    """(compute as a fraction of the grid's, best objective so far, seconds since the sweep began)."""
    sign = 1.0 if mode == "max" else -1.0
    done, best, out = 0.0, None, []
    for e in events:
        done += e["updates"]
        if e["value"] is not None and math.isfinite(e["value"]) and (best is None or sign * e["value"] > sign * best):
            best = e["value"]
        out.append((done / grid_compute, best, e["t"]))
    return out


def value_at(curve: list[tuple[float, float, float]], fraction: float) -> float | None:
    """Best objective so far once ``fraction`` of the grid's compute is spent (None: nothing yet or the
    method had stopped before that compute)."""
    if not curve or curve[-1][0] < fraction - 1e-9:
        return None
    best = None
    for f, b, _ in curve:
        if f > fraction + 1e-9:
            break
        best = b
    return best


def to_target(curve: list[tuple[float, float, float]], target: float, mode: str) -> tuple[float, float]:
    """(compute fraction, seconds) at which the best-so-far first meets the target; inf when never."""
    for f, b, t in curve:
        if b is not None and (b >= target if mode == "max" else b <= target):
            return f, t
    return math.inf, math.inf


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return math.nan, math.nan, math.nan
    big = 1e12                                   # inf (never reached) survives the interpolation as inf
    q = np.percentile(np.minimum(np.asarray(values, dtype=float), big), [25, 50, 75])
    lo, med, hi = (math.inf if v >= 1e6 else float(v) for v in q)
    return lo, med, hi


def fmt_q(values: list[float | None], digits: int = 2) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    lo, med, hi = quartiles(vals)
    miss = f" ({len(values) - len(vals)} n/a)" if len(vals) < len(values) else ""
    return f"{med:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]{miss}"


# --------------------------------------------------------------------------- runs
def run_method(model: str, method: str, seed: int, trials: int, space: Path, concurrency: int,
               log: Path) -> dict[str, Any]:
    from zsexp.search.sweep import SweepOptions, run_sweep

    name = f"{method.replace('+', '-')}-s{seed}"
    t0 = time.time()
    with quiet(log):
        s = run_sweep(SweepOptions(model=model, dataset="synthetic-tiny", space=str(space), trials=trials, seed=seed,
                                   name=name, cpus_per_trial=1, max_concurrent=concurrency, progress_every_s=1e9))
    return {"name": name, "t0": t0, "wall_s": time.time() - t0, "fit_s": s["wall_s"], "best": s["best"],
            "outcomes": s["outcomes"], "peak": s["peak_concurrency"],
            "baseline_val": (s.get("baseline") or {}).get("value"), "chance_val": s.get("chance")}


@contextlib.contextmanager
def quiet(log: Path):
    """The sweeps' and selections' own console output goes to ``log`` (the benchmark prints its figures)."""
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield


def pick_test(name: str, seeds: int, metric: str, log: Path) -> dict[str, Any]:
    """``zsexp select --k 1``: the method's pick retrained with fresh seeds, on test once."""
    from zsexp.search.storage import read_meta
    from zsexp.selection import SelectOptions, run_selection

    with quiet(log):
        run_selection(SelectOptions(sweep=name, k=1, seeds=seeds))
    sel = json.loads((Path(read_meta(name, None).dir) / f"selection-k1-s{seeds}" / "selection.json").read_text())
    w = sel["summary"][sel["winner"]]
    out = {"test": w["stats"][metric]["mean"], "config": w.get("params") or w.get("config")}
    base = sel.get("baseline") or {}
    out["baseline_test"] = (base.get("metrics") or {}).get(metric)
    out["chance_test"] = (base.get("chance") or {}).get(metric)
    return out


def wilcoxon(a: list[float], b: list[float], sign: float) -> dict[str, Any]:
    """Paired comparison of ``a`` with ``b``; wins and losses for ``a`` (``sign`` -1: lower is better)."""
    from scipy import stats

    d = [x - y for x, y in zip(a, b, strict=True)]
    if len(d) < 2 or all(abs(x) < 1e-12 for x in d):
        return {"n": len(d), "mean_diff": statistics.mean(d) if d else math.nan, "p_value": 1.0}
    r = stats.wilcoxon(a, b)
    return {"n": len(d), "mean_diff": statistics.mean(d), "wins": sum(sign * x > 0 for x in d),
            "losses": sum(sign * x < 0 for x in d), "p_value": float(r.pvalue)}


def plot(curves: dict[str, list], target: float, refs: dict[str, float | None], metric: str, path: Path,
         xmax: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(0, xmax, 101)[1:]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for method, per_seed in curves.items():
        rows = []
        for x in xs:
            v = [value_at(c, x) for c in per_seed]
            rows.append([np.nan if u is None else u for u in v])
        arr = np.asarray(rows, dtype=float)
        ok = ~np.any(np.isnan(arr), axis=1)          # drawn while every seed's run is still going
        med = np.median(arr[ok], axis=1)
        lo, hi = np.percentile(arr[ok], 25, axis=1), np.percentile(arr[ok], 75, axis=1)
        (line,) = ax.plot(xs[ok], med, label=method)
        ax.fill_between(xs[ok], lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(target, color="k", ls="--", lw=1, label="target (grid optimum - seed sd)")
    for label, v in refs.items():
        if v is not None:
            ax.axhline(v, color="grey", ls=":", lw=1)
            ax.annotate(label, (0.01 * xmax, v), ha="left", va="bottom", fontsize=8, color="grey")
    ax.axvline(0.25, color="red", lw=0.8, alpha=0.5)
    ax.set_xlabel("compute (fraction of the grid's optimiser updates)")
    ax.set_ylabel(f"best validation {metric} so far")
    ax.set_title("Anytime best validation objective, median and quartiles over seeds")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SPACES), default="zscrgan")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for every method (default 5)")
    ap.add_argument("--budget", type=float, default=0.5,
                    help="random / TPE / TPE+ASHA run about this fraction of the grid's compute (default 0.5)")
    ap.add_argument("--asha-trials", type=float, default=2.5,
                    help="TPE+ASHA runs this many times the trials of random / TPE (its trials are cheaper)")
    ap.add_argument("--select-seeds", type=int, default=2, help="seeds of each pick's retraining (zsexp select)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", default="search-efficiency", help="folder for the PNG and the JSON")
    ap.add_argument("--from-json", metavar="FILE",
                    help="analyse a saved search_efficiency_raw.json again (no training)")
    ap.add_argument("--grace", type=int, help="ASHA's grace period in updates (default: the model's, see SPACES)")
    ap.add_argument("--rerun", action="append", choices=METHODS, metavar="METHOD",
                    help="with --from-json: run METHOD again (e.g. tpe+asha with another --grace) and keep the "
                         "other methods' runs from the file (repeatable)")
    ap.add_argument("--smoke", action="store_true",
                    help="2 values per grid parameter, 3 rounds, 2 seeds: checks the pipeline, measures nothing")
    args = ap.parse_args()
    if args.smoke:
        s = SPACES[args.model]
        s["grid"] = {k: v[:2] for k, v in s["grid"].items()}
        rounds_key = "em_iterations" if args.model == "zscrgan" else "max_steps"
        if rounds_key in s["fixed"]:
            s["fixed"][rounds_key] = 3
        s["fidelity"] = {**s["fidelity"], "max_rounds": 3}
        args.seeds, args.select_seeds = 2, 1
    if args.grace:
        SPACES[args.model]["fidelity"] = {**SPACES[args.model]["fidelity"], "grace_updates": args.grace}
    if args.seeds < 2:
        ap.error("--seeds must be >= 2 (the target needs a seed spread)")
    if args.rerun and not args.from_json:
        ap.error("--rerun needs --from-json (the run whose other methods are kept)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        if args.rerun:                       # the same protocol as the file's, for the methods run again
            args.model, args.seeds = doc["model"], len(doc["seeds"])
            args.select_seeds, args.budget = doc["select_seeds"], doc["trials"]["random"] / doc["trials"]["grid"]
            SPACES[args.model]["grid"] = doc["grid"]
            new = collect(args, out, methods=tuple(args.rerun))
            for m in args.rerun:
                doc["runs"][m], doc["spaces"][m] = new["runs"][m], new["spaces"][m]
                if new["picks"]:
                    doc["picks"][m] = new["picks"][m]
            doc["rerun"] = {"methods": args.rerun, "spaces": new["spaces"]}
        (out / "search_efficiency_raw.json").write_text(json.dumps(doc, default=str))
    else:
        doc = collect(args, out)
    analyse(doc, out)


def collect(args: argparse.Namespace, out: Path, methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Run every method's sweeps and picks; returns the raw record (saved before any analysis)."""
    import ray

    from zsexp.search.space import metric_key

    home = Path(tempfile.mkdtemp(prefix="zsexp-search-eff-"))
    os.environ["ZSEXP_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    model = args.model
    metric = SPACES[model]["objective"]["metric"]
    key = metric_key(metric)
    n_grid = grid_size(model)
    trials = {"grid": n_grid, "random": max(2, round(args.budget * n_grid)),
              "tpe": max(2, round(args.budget * n_grid)),
              "tpe+asha": max(2, round(args.budget * n_grid * args.asha_trials))}
    spaces = {m: space_file(model, m, out) for m in METHODS}
    log = out / "sweeps.log"
    log.write_text("")
    seeds = list(range(args.seeds))
    print(f"{model} on synthetic-tiny; grid {SPACES[model]['grid']} = {n_grid} configurations at the full budget "
          f"{SPACES[model]['fidelity']}; trials per seed {trials}; seeds {seeds}; ZSEXP_HOME {home}; "
          f"the sweeps' own output: {log}", flush=True)
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    t_all = time.time()
    runs: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in methods}
    picks: dict[str, list[dict[str, Any]]] = {}
    try:
        for method in methods:
            for seed in seeds:
                r = run_method(model, method, seed, trials[method], spaces[method], args.concurrency, log)
                r["events"] = sweep_events(r["name"], key)
                for e in r["events"]:
                    e["t"] = e["ts"] - r["t0"]
                r["configs"] = {t.trial_id: t.config for t in _trial_configs(r["name"])}
                r["best_value"] = (r.pop("best") or {}).get("value")
                runs[method][str(seed)] = r
                n_failed = list(r["outcomes"].values()).count("failed")
                print(f"  {method:8s} seed {seed}: {len(r['outcomes'])} trials ({n_failed} failed), "
                      f"{sum(e['updates'] for e in r['events']):.0f} updates, {len(r['events'])} rounds, "
                      f"peak concurrency {r['peak']}, {r['wall_s']:.0f}s; best val {metric} "
                      f"{_num(r['best_value'])}  ({time.time() - t_all:.0f}s)", flush=True)
        if args.select_seeds > 0:
            for m in methods:
                picks[m] = [pick_test(runs[m][str(s)]["name"], args.select_seeds, metric, log) for s in seeds]
                print(f"  {m:8s} picks retrained ({args.select_seeds} seeds each)  ({time.time() - t_all:.0f}s)",
                      flush=True)
    finally:
        ray.shutdown()
    doc = {"model": model, "dataset": "synthetic-tiny", "metric": metric, "mode": SPACES[model]["objective"]["mode"],
           "seeds": seeds, "select_seeds": args.select_seeds, "grid": SPACES[model]["grid"],
           "spaces": {m: yaml.safe_load(spaces[m].read_text()) for m in methods}, "trials": trials,
           "runs": runs, "picks": picks, "collect_wall_s": time.time() - t_all, "zsexp_home": str(home)}
    (out / "search_efficiency_raw.json").write_text(json.dumps(doc, default=str))
    return doc


def analyse(doc: dict[str, Any], out: Path) -> None:
    """Everything printed, plotted and saved, from the raw record alone."""
    metric, mode, seeds = doc["metric"], doc["mode"], [str(s) for s in doc["seeds"]]
    sign = 1.0 if mode == "max" else -1.0
    runs, picks, trials = doc["runs"], doc.get("picks") or {}, doc["trials"]
    # ---------------------------------------------------------------- the target, from the grid
    grid_compute = {s: sum(e["updates"] for e in runs["grid"][s]["events"]) for s in seeds}
    per_cfg: dict[str, list[float]] = {}
    for s in seeds:
        best_of: dict[str, float] = {}
        for e in runs["grid"][s]["events"]:
            if e["value"] is not None and (e["trial"] not in best_of or sign * e["value"] > sign * best_of[e["trial"]]):
                best_of[e["trial"]] = e["value"]
        for tid, v in best_of.items():
            cfg = runs["grid"][s]["configs"][tid]
            per_cfg.setdefault(json.dumps({k: cfg[k] for k in sorted(doc["grid"])}), []).append(v)
    full = {c: v for c, v in per_cfg.items() if len(v) == len(seeds)}
    best_cfg = max(full, key=lambda c: sign * statistics.mean(full[c]))
    spread = statistics.stdev(full[best_cfg])
    grid_best = [runs["grid"][s]["best_value"] for s in seeds]
    optimum = statistics.median(grid_best)
    target = optimum - sign * spread
    base_val, chance_val = runs["grid"][seeds[0]]["baseline_val"], runs["grid"][seeds[0]]["chance_val"]
    print(f"\n{doc['model']} on {doc['dataset']}, {len(seeds)} seeds; grid optimum (median over seeds of each seed's "
          f"grid best val {metric}): {optimum:.2f}; the grid's best configuration {best_cfg}: "
          f"{statistics.mean(full[best_cfg]):.2f} ± {spread:.2f} over {len(seeds)} model seeds; "
          f"target = {optimum:.2f} {'-' if sign > 0 else '+'} {spread:.2f} = {target:.2f}")
    print(f"beside it, on the same validation classes: ridge baseline {_num(base_val)}, chance {_num(chance_val)}")
    # ---------------------------------------------------------------- curves
    curves = {m: [anytime(runs[m][s]["events"], mode, grid_compute[s]) for s in seeds] for m in METHODS}
    print(f"\nanytime best validation {metric}, median [quartiles] over {len(seeds)} seeds, at a fraction of "
          f"the grid's compute (n/a: the method had stopped before)")
    print("| method | trials/seed | compute run | " + " | ".join(f"{f:g}" for f in FRACTIONS) + " |")
    print("|---|---|---|" + "---|" * len(FRACTIONS))
    for m in METHODS:
        ran = [c[-1][0] for c in curves[m]]
        print(f"| {m} | {trials[m]} | {fmt_q(ran)} | "
              + " | ".join(fmt_q([value_at(c, f) for c in curves[m]]) for f in FRACTIONS) + " |")
    reach = {m: [to_target(c, target, mode) for c in curves[m]] for m in METHODS}
    reach_opt = {m: [to_target(c, optimum, mode)[0] for c in curves[m]] for m in METHODS}
    print(f"\ncompute and wall time to the target {target:.2f} (inf: never within the method's run); last "
          f"column: compute to the grid optimum {optimum:.2f} itself")
    print("| method | reached within 0.25 | compute to target (median [quartiles]) | per seed | wall s to target "
          "| compute to the optimum |")
    print("|---|---|---|---|---|---|")
    for m in METHODS:
        fr = [r[0] for r in reach[m]]
        print(f"| {m} | {sum(f <= 0.25 for f in fr)}/{len(fr)} | {fmt_q(fr, 3)} | "
              f"{', '.join(f'{f:.3f}' for f in fr)} | {fmt_q([r[1] for r in reach[m]], 0)} | "
              f"{fmt_q(reach_opt[m], 3)} |")
    at_q = {m: [value_at(c, 0.25) for c in curves[m]] for m in ("tpe+asha", "random")}
    paired = [i for i in range(len(seeds)) if None not in (at_q["tpe+asha"][i], at_q["random"][i])]
    pair = wilcoxon([at_q["tpe+asha"][i] for i in paired], [at_q["random"][i] for i in paired], sign)
    print(f"\nTPE+ASHA vs random search at 0.25 of the grid's compute, paired over seeds: mean difference "
          f"{sign * pair['mean_diff']:+.2f} ({'better' if sign * pair['mean_diff'] > 0 else 'not better'}), "
          f"{pair.get('wins', 0)} wins / {pair.get('losses', 0)} losses, Wilcoxon p = {pair['p_value']:.3f} "
          f"(n = {pair['n']})")
    walls = {m: sum(runs[m][s]["wall_s"] for s in seeds) for m in METHODS}
    print("wall time per method, all seeds: " + ", ".join(f"{m} {w:.0f}s" for m, w in walls.items()))
    # ---------------------------------------------------------------- test value of each pick
    if picks:
        base_t, chance_t = picks["grid"][0]["baseline_test"], picks["grid"][0]["chance_test"]
        print(f"\ntest {metric} of each method's pick (zsexp select --k 1 --seeds {doc['select_seeds']}: retrained "
              f"on train + val for its best round, test classes once), mean ± sd over sweep seeds")
        print("| method | test of pick | ridge (train + val) | chance |\n|---|---|---|---|")
        for m in METHODS:
            v = [p["test"] for p in picks[m]]
            print(f"| {m} | {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} | {_num(base_t)} | "
                  f"{_num(chance_t)} |")
    plot(curves, target, {"ridge (val)": base_val, "chance": chance_val}, metric, out / "search_efficiency.png",
         xmax=max(1.0, max(c[-1][0] for cs in curves.values() for c in cs)))
    r_median = statistics.median([r[0] for r in reach["tpe+asha"]])
    summary = {"grid_compute_updates": grid_compute, "grid_best_per_seed": grid_best, "grid_optimum": optimum,
               "grid_best_config": json.loads(best_cfg), "grid_best_config_values": full[best_cfg],
               "seed_spread": spread, "target": target, "baseline_val": base_val, "chance_val": chance_val,
               "reach_target": {m: [{"fraction": r[0], "seconds": r[1]} for r in reach[m]] for m in METHODS},
               "reach_optimum": reach_opt, "paired_tpe_asha_vs_random_at_0.25": pair, "wall_s": walls,
               "anytime": {m: {str(f): [value_at(c, f) for c in curves[m]] for f in FRACTIONS} for m in METHODS},
               "R_median": r_median}
    (out / "search_efficiency.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{out / 'search_efficiency.png'}, {out / 'search_efficiency.json'} (summary), "
          f"{out / 'search_efficiency_raw.json'} (every round of every trial)")
    print(f"TPE+ASHA reaches the grid optimum with {r_median:.3f} of the grid's compute "
          f"(median over {len(seeds)} seeds)")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _trial_configs(name: str) -> list[dict[str, Any]]:
    from zsexp.search.space import parse_space
    from zsexp.search.status import sweep_trials
    from zsexp.search.storage import read_meta

    meta = read_meta(name, None)
    return sweep_trials(meta, parse_space(meta.space, meta.space_source, meta.model))


if __name__ == "__main__":
    main()
