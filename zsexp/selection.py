"""``zsexp select SWEEP``: the final-selection job.  The test classes never feed a decision.

Protocol (one rule from the sweep to the registry):

1. **Rank** the sweep's configurations by their best-round objective on the validation classes
   (the same value Optuna was told, see ``zsexp.search.optuna_search``); failed trials and trials
   without the metric are left out, identical configurations count once (best value), ties keep
   the earlier trial.  Take the top k.  Each candidate's *budget* is the round at which its sweep
   trial reached that value: the configuration ranked is that configuration trained that long.
2. **Decide on validation**: train each candidate with ``--seeds`` seeds on the **train** classes
   for its budget and measure the objective on the validation classes at the last round.  The
   winner is the candidate with the best mean validation objective over seeds (ties: the higher
   ranked candidate).
3. **Final models**: train each candidate x seed again on **train + val** for the same budget and
   keep the last round (no validation classes are left to choose a round with).
4. **Report on test, once**: every candidate's final models are evaluated on the unseen test
   classes, with mean, standard deviation and a 95% t-interval over seeds and a paired Wilcoxon
   signed-rank test of the winner against the runner-up (the second by validation) over test
   classes.  These numbers describe the choice; they never make it.
5. **Register** the winner's final model of the seed whose validation objective is nearest the
   winner's mean (ties: the lower seed) -- a typical seed, not the luckiest on test -- as an
   MLflow pyfunc retrieval model with the alias ``candidate``.  The version records the validation
   mean ± sd, the number of seeds, the rule, and the configuration's test mean ± sd.

Every (candidate, seed, phase) runs as a Tune trial on the sweep's Ray cluster with the sweep's
per-trial resources.  Resumable: each run writes its result file when it finishes and a
checkpoint after every round; running the job again skips finished runs and continues the others.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from zsexp import workcopy
from zsexp.errors import ZsexpError
from zsexp.fitting import GridProgress
from zsexp.meta import SweepMeta, TrialRecord
from zsexp.models import get_spec
from zsexp.protocol import MAX_K, MAX_SEEDS, PHASES, PLURAL, PROTOCOL, SEED_RULE, Decision, SelectOptions, fmt_stats
from zsexp.search.space import SearchSpace, parse_space
from zsexp.search.status import sweep_trials
from zsexp.search.storage import read_meta

PER_QUERY_KEY = {"precision@50": "precision", "map@50": "ap", "top1": "top1", "map": "ap_full"}


# --------------------------------------------------------------------------- ranking
def rank_configs(trials: list[TrialRecord], space: SearchSpace) -> list[dict[str, Any]]:
    """Distinct configurations by best-round validation value; each keeps that round as its budget."""
    seen: dict[str, dict[str, Any]] = {}
    for order, t in enumerate(sorted(trials, key=lambda t: t.trial_id)):
        val = t.best
        if t.status == "ERROR" or t.outcome == "failed" or val is None or not math.isfinite(val):
            continue
        params = {k: t.config[k] for k in sorted(space.params) if k in t.config}
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in seen or _better(val, seen[key]["value"], space.mode):
            seen[key] = {"trial_id": t.trial_id, "value": float(val), "params": params, "order": order,
                         "round": t.best_round or t.rounds}
    sign = -1.0 if space.mode == "max" else 1.0
    return sorted(seen.values(), key=lambda c: (sign * c["value"], c["order"]))


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def choose_winner(val_means: list[float], mode: str) -> int:
    """Index of the best mean validation objective; ties go to the earlier (higher-ranked) candidate."""
    best = 0
    for i, v in enumerate(val_means):
        if _better(v, val_means[best], mode):
            best = i
    return best


def typical_seed(val_by_seed: dict[int, float]) -> int:
    """:data:`SEED_RULE`: the seed nearest the mean validation objective, ties to the lower seed."""
    mean = float(np.mean(list(val_by_seed.values())))
    return min(val_by_seed, key=lambda s: (abs(val_by_seed[s] - mean), s))


# --------------------------------------------------------------------------- one (candidate, seed, phase)
def run_stem(ci: int, seed: int, phase: str) -> str:
    return f"c{ci}-s{seed}-{phase}"


def selection_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Phase ``val``: fit on train for the candidate's budget, measure the validation classes.
    Phase ``test``: fit on train + val for the same budget, evaluate the test classes (report only)."""
    from ray import tune

    from zsexp.fitting import fit_and_evaluate, write_result
    from zsexp.search.cluster import trial_threads

    trial_threads()
    ci, seed, phase = job["pairs"][config["pair"]]
    cand = job["candidates"][ci]
    out = job["dir"]           # a folder, or an object-store URI (zsexp.fitting.RunFolder)
    stem = run_stem(ci, seed, phase)
    result = fit_and_evaluate(job["trial_meta"], cand["params"], seed, PHASES[phase], cand.get("round"), out, stem,
                              split=phase)
    write_result(out, stem, {"candidate": ci, "phase": phase, **result})
    tune.report({"round": result["rounds"], "finished": True})


class SelectionProgress(GridProgress):
    """One line per finished selection run (candidate, seed, phase, its value)."""

    def __init__(self, sweep: str, pairs: list, n: int, sel_dir: Path, objective: str):
        super().__init__(f"select {sweep}", n, sel_dir, objective)
        self.pairs = pairs

    def describe(self, index: int) -> str:
        ci, seed, phase = self.pairs[index]
        return f"c{ci} seed {seed} {phase} (fit on {PHASES[phase]}) "

    def stem(self, index: int) -> str:
        return run_stem(*self.pairs[index])

    def outcome(self, result: dict[str, Any]) -> str:
        metrics = result["metrics"]
        return f"{result['phase']} {self.objective} {metrics[self.objective]:.3f}" if self.objective in metrics \
            else "done"


# --------------------------------------------------------------------------- statistics
def per_class_values(objective: str, result: dict[str, Any]) -> dict[int, float]:
    """Per test class value of the objective for one run (the unit of the paired test between
    candidates): the mean of its queries' (retrieval) or images' (ZSL) values."""
    per = result["per"]
    vals = per_unit_values(objective, per, result["n_candidates"])
    classes = np.asarray(per["query_classes"] if "per_query" in per else per["image_labels"])
    return {int(c): float(vals[classes == c].mean()) for c in np.unique(classes)}


def test_candidate_counts(data: Any) -> dict[str, int]:
    """How many classes a test image is ranked among (ZSL, GZSL; ``models.common.zsl_candidates``): what
    turns a per-image rank into its MFR."""
    from zsexp.models.common import zsl_candidates

    return {k: len(v) for k, v in zsl_candidates(data, "test", "trainval", "the test report").items()}


def per_unit_values(objective: str, per: dict[str, Any], n_candidates: dict[str, int]) -> np.ndarray:
    """The objective per query (retrieval) or per test image (ZSL), in the split's fixed order: the unit
    of the paired test of a model against the task's baseline, which sees the same queries / images."""
    if "per_query" in per:
        return np.asarray(per["per_query"][PER_QUERY_KEY[objective]], dtype=float)
    setting, metric = objective.split("/")
    ranks = np.asarray(per[f"{setting}/ranks"], dtype=float)
    if metric == "mfr":
        return 100.0 * ranks / n_candidates[setting]
    return 100.0 * (ranks <= int(metric.split("@")[1]))


def paired_units(a: np.ndarray, b: np.ndarray, unit: str) -> dict[str, Any]:
    """Wilcoxon signed-rank test of two models over the same queries / images."""
    from scipy import stats

    if a.shape != b.shape:
        raise ZsexpError(f"paired test: {a.size} vs {b.size} {unit}s; the two models were not evaluated alike")
    if a.size < 2 or np.allclose(a, b):
        return {"test": "wilcoxon", "unit": unit, "n": int(a.size), "p_value": 1.0, "significant": False,
                "note": "identical values" if a.size >= 2 else f"too few {unit}s"}
    res = stats.wilcoxon(a, b)
    return {"test": "wilcoxon", "unit": unit, "n": int(a.size), "statistic": float(res.statistic),
            "p_value": float(res.pvalue), "significant": bool(res.pvalue < 0.05)}


def baseline_beside(model: str, d: Decision, data: Any, cfg: Any) -> dict[str, Any] | None:
    """The task's baseline on the same test split as the winner's final models: tuned on validation,
    fitted on train + val (like them), evaluated once on test, with chance and a paired test over the
    test queries / images (the winner's per-unit values averaged over its seeds).  Reported, never used
    to decide."""
    from zsexp.baselines import safe_baseline

    base = safe_baseline(model, data, "trainval", cfg, log=print, per_query=True)
    if base is None or "error" in base:
        return None
    chance = base["chance"]["test"]
    tobj = d.test_objective
    runs = [r for r in d.test_runs if r["candidate"] == d.winner]
    ncand = runs[0]["n_candidates"]                   # the same candidates as the winner's evaluation
    unit = "query" if "per_query" in runs[0]["per"] else "image"
    winner = np.mean([per_unit_values(tobj, r["per"], ncand) for r in runs], axis=0)
    per_b = {k: v for k, v in base["test"].items() if not isinstance(v, float)}
    ref = per_unit_values(tobj, per_b, ncand)
    return {"model": base["model"], "lam": base["config"]["lam"], "chosen_by": base["chosen_by"],
            "metrics": {k: v for k, v in base["test"].items() if isinstance(v, float)}, "chance": chance,
            "test": paired_units(winner, ref, unit)}


def summarise(values: list[float]) -> dict[str, float]:
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    half = float(stats.t.ppf(0.975, arr.size - 1) * sd / math.sqrt(arr.size)) if arr.size > 1 else float("nan")
    return {"mean": mean, "std": sd, "ci95_low": mean - half, "ci95_high": mean + half, "n": int(arr.size)}


def paired_test(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    from scipy import stats

    keys = sorted(set(a) & set(b))
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    if len(keys) < 2 or np.allclose(x, y):
        return {"test": "wilcoxon", "n": len(keys), "p_value": 1.0, "significant": False,
                "note": "identical per-class values" if len(keys) >= 2 else "too few classes"}
    res = stats.wilcoxon(x, y)
    return {"test": "wilcoxon", "n": len(keys), "statistic": float(res.statistic), "p_value": float(res.pvalue),
            "significant": bool(res.pvalue < 0.05)}


# --------------------------------------------------------------------------- the job
def run_selection(o: SelectOptions) -> dict[str, Any]:
    from zsexp.names import check_name
    from zsexp.protocol import deciding_space
    from zsexp.search import integrity
    from zsexp.search.lock import SweepLock
    from zsexp.tracking import check_tracking_uri

    if not 1 <= o.k <= MAX_K or not 1 <= o.seeds <= MAX_SEEDS:
        raise ZsexpError(f"--k must be in 1..{MAX_K} and --seeds in 1..{MAX_SEEDS}, got k={o.k}, seeds={o.seeds}")
    if o.retrieval_k < 1:
        raise ZsexpError(f"--retrieval-k must be >= 1, got {o.retrieval_k}")
    if o.register_as is not None:
        check_name(o.register_as, "--register-as")
    meta = read_meta(o.sweep, o.storage)
    space = deciding_space(parse_space(meta.space, meta.space_source, meta.model), o)
    check_tracking_uri(meta.tracking_uri)
    from zsexp.data import load_dataset
    from zsexp.search.storage import check_writable_state

    load_dataset(meta.dataset, seed=meta.trial_meta.get("data_seed", 0))      # still the data it was: checked first

    check_writable_state(Path(meta.dir))                      # its selection folder and the lock
    with SweepLock(Path(meta.dir).parent, o.sweep, "select"):
        integrity.verified(Path(meta.dir), o.trust_storage)   # before Tune's state is read
        return _select(o, meta, space)


def _select(o: SelectOptions, meta: SweepMeta, space: SearchSpace) -> dict[str, Any]:
    try:
        trials = sweep_trials(meta, space)          # one pass over Tune's experiment state
    except Exception as exc:  # noqa: BLE001 - no or unreadable snapshot
        raise ZsexpError(f"sweep {o.sweep!r} has no readable trial record yet ({type(exc).__name__}); it was stopped "
                         f"before its first trial was saved: `zsexp resume {o.sweep}` runs it") from None
    multi = space.multi
    if multi:                # the Pareto front, spread along the deciding objective; then decided on it alone
        from zsexp.search.pareto import front_candidates

        ranked = front_candidates(meta, space, trials, o.objective, o.k)
        space = space.single(o.objective)
    else:
        ranked = rank_configs(trials, space)
    if not ranked:
        raise ZsexpError(f"sweep {o.sweep!r} has no completed trial with val {space.metric}; nothing to select")
    cands = ranked[: o.k]
    sel_dir = Path(meta.dir) / (f"selection-k{o.k}-s{o.seeds}" + (f"-{space.metric_key}" if multi else ""))
    sel_dir.mkdir(parents=True, exist_ok=True)
    cand_file = sel_dir / "candidates.json"
    old = json.loads(cand_file.read_text()) if cand_file.is_file() else None
    if old and all("round" in c for c in old):
        cands = old                                      # a re-run keeps the first run's candidates
    else:
        for stale in sel_dir.glob("c*-s*.*"):            # none yet, or written by an older zsexp
            stale.unlink()
        cand_file.write_text(json.dumps(cands, indent=2, default=str))
    pairs = [(ci, s, phase) for phase in PHASES for ci in range(len(cands)) for s in range(o.seeds)]
    missing = [i for i, p in enumerate(pairs) if not (sel_dir / f"{run_stem(*p)}.json").is_file()]
    print(f"[select {o.sweep}] top {len(cands)} configurations x {o.seeds} seeds, each fitted on train (decision "
          f"on validation) and on train+val (test report); {len(pairs) - len(missing)} of {len(pairs)} runs "
          f"already finished")
    if missing:
        from zsexp.fitting import run_grid

        job = {"dir": str(sel_dir), "pairs": pairs, "candidates": cands, "trial_meta": meta.trial_meta}
        progress = SelectionProgress(o.sweep, pairs, len(missing), sel_dir, space.metric)
        run_grid(selection_trial, job, missing, meta.options, sel_dir, progress, o.address,
                 again=f"run `zsexp select {o.sweep}` again")
    results = [read_result(sel_dir, p) for p in pairs]
    return finish_selection(o, meta, space, cands, results, sel_dir, trials)


def read_result(sel_dir: Path, pair: tuple[int, int, str]) -> dict[str, Any]:
    """One finished run's result file; its model file is where this job writes it, never a path read back
    from the file (so an edited result cannot make the registry log a file from elsewhere)."""
    stem = run_stem(*pair)
    path = sel_dir / f"{stem}.json"
    try:
        res = json.loads(path.read_text())
        if not isinstance(res, dict) or not isinstance(res.get("metrics"), dict):
            raise ValueError("not a result record")
    except (OSError, ValueError) as exc:
        raise ZsexpError(f"{path}: unreadable selection result ({exc}); delete it and run `zsexp select` again "
                         f"(that run is then trained again)") from None
    if pair[2] == "test":
        res["model_path"] = str(sel_dir / f"{stem}.model.pt")
    return res


def decide(model: str, space: SearchSpace, cands: list[dict[str, Any]], results: list[dict[str, Any]],
           n_unseen: int, n_all: int) -> dict[str, Any]:
    """Winner and registered seed from the validation runs only; test statistics for the report."""
    val_runs = [r for r in results if r["phase"] == "val"]
    test_runs = [r for r in results if r["phase"] == "test"]
    for r in test_runs:
        r["n_candidates"] = {"zsl": n_unseen, "gzsl": n_all}
    objective = space.metric                                   # decision: the sweep's own objective
    test_metric_names = sorted(test_runs[0]["metrics"])
    test_objective = objective if objective in test_metric_names else get_spec(model).objective
    test_mode = space.mode if test_objective == objective else get_spec(model).mode
    summary = []
    for ci, cand in enumerate(cands):
        vals = {r["seed"]: r["metrics"][objective] for r in val_runs if r["candidate"] == ci}
        runs = [r for r in test_runs if r["candidate"] == ci]
        per_class: dict[int, list[float]] = {}
        for r in runs:
            for c, v in per_class_values(test_objective, r).items():
                per_class.setdefault(c, []).append(v)
        summary.append({"candidate": ci, "trial_id": cand["trial_id"], "sweep_val": cand["value"],
                        "budget_rounds": cand["round"], "params": cand["params"],
                        "val_by_seed": vals, "val": summarise(list(vals.values())),
                        "stats": {m: summarise([r["metrics"][m] for r in runs]) for m in test_metric_names},
                        "per_class": {c: float(np.mean(v)) for c, v in per_class.items()}})
    w = choose_winner([s["val"]["mean"] for s in summary], space.mode)
    order = [summary[w]] + sorted((s for s in summary if s["candidate"] != w),
                                  key=lambda s: (-1.0 if space.mode == "max" else 1.0) * s["val"]["mean"])
    seed = typical_seed(summary[w]["val_by_seed"])
    registered = next(r for r in test_runs if r["candidate"] == w and r["seed"] == seed)
    test = paired_test(order[0]["per_class"], order[1]["per_class"]) if len(order) > 1 else None
    return Decision(objective=objective, mode=space.mode, test_objective=test_objective, test_mode=test_mode,
                    summary=summary, order=order, winner=w, seed=seed, registered_run=registered, test=test,
                    val_runs=val_runs, test_runs=test_runs)


def finish_selection(o: SelectOptions, meta: SweepMeta, space: SearchSpace, cands: list[dict[str, Any]],
                     results: list[dict[str, Any]], sel_dir: Path, trials: list[TrialRecord]) -> dict[str, Any]:
    from zsexp.data import load_dataset
    from zsexp.registry import log_selection
    from zsexp.report import write_report

    data = load_dataset(meta.dataset, seed=meta.trial_meta["data_seed"])
    counts = test_candidate_counts(data)
    d = decide(meta.model, space, cands, results, counts["zsl"], counts["gzsl"])
    from zsexp.search.trainable import trial_config

    winner_cfg = trial_config(meta.trial_meta, cands[d.winner]["params"])[1]
    d.baseline = baseline_beside(meta.model, d, data, winner_cfg)
    report = write_report(meta, space, d, sel_dir, trials)
    out = {"sweep": meta.name, "protocol": PROTOCOL, "objective": d.objective, "mode": space.mode,
           "test_objective": d.test_objective, "test_mode": d.test_mode, "summary": d.summary,
           "winner": d.winner, "winner_seed": d.seed, "seed_rule": SEED_RULE, "test": d.test, "baseline": d.baseline,
           "report": workcopy.describe(report), "dir": workcopy.describe(sel_dir)}
    out.update(log_selection(o, meta, d, results, sel_dir, data))
    (sel_dir / "selection.json").write_text(json.dumps(out, indent=2, default=str))
    print_selection(out, d.order)
    return out


def print_selection(out: dict[str, Any], order: list[dict[str, Any]]) -> None:
    obj, tobj = out["objective"], out["test_objective"]
    print(f"[select {out['sweep']}] {out['protocol']}")
    print(f"[select {out['sweep']}] per configuration: val {obj} (decides) | test {tobj} (report), "
          f"mean ± sd [95% CI] over seeds:")
    for s in order:
        mark = "winner" if s["candidate"] == out["winner"] else "      "
        print(f"  {mark} c{s['candidate']} (trial {s['trial_id']}, {s['budget_rounds']} rounds): "
              f"val {fmt_stats(s['val'])} | test {fmt_stats(s['stats'][tobj])}")
    t = out["test"]
    if t:
        word = "significant" if t["significant"] else "NOT significant"
        print(f"    on test, winner c{out['winner']} vs runner-up: Wilcoxon p = {t['p_value']:.4f} ({word} at 0.05)")
    b = out.get("baseline")
    if b:
        w = next(s for s in order if s["candidate"] == out["winner"])
        t = b["test"]
        chance = b["chance"].get(tobj)
        print(f"    beside it on the same test split: {b['model']} (lam={b['lam']:g}, chosen on validation) {tobj} "
              f"{b['metrics'][tobj]:.2f}" + (f", chance {chance:.2f}" if chance is not None else "")
              + f"; winner mean {w['stats'][tobj]['mean']:.2f}; paired Wilcoxon over {t['n']} test "
              f"{PLURAL[t['unit']]}: "
              f"p = {t['p_value']:.4f} ({'significant' if t['significant'] else 'NOT significant'} at 0.05)")
    print(f"[select {out['sweep']}] report {out['report']}")
    print(f"[select {out['sweep']}] registered {out['registered_model']} version {out['version']} (seed "
          f"{out['winner_seed']}: {out['seed_rule']}) as @candidate; load it with "
          f"mlflow.pyfunc.load_model('{out['model_uri']}')")
    from zsexp.ui_links import DEFAULT_UI, model_link

    print(f"[select {out['sweep']}] in the MLflow UI (`zsexp ui`): {model_link(DEFAULT_UI, out['registered_model'])}; "
          f"report.html is in the selection run's artifacts")
