"""What a sweep reports: its summary at the end, ``zsexp status`` (one sweep or all), the reference
values (baseline and chance) beside the best trial, and the MLflow UI links."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsexp.meta import SweepMeta, TrialRecord
from zsexp.names import metric_key
from zsexp.protocol import margin
from zsexp.search import compute, integrity
from zsexp.search.record import read_progress
from zsexp.search.storage import read_meta, snapshot_trials, sweep_names
from zsexp.tags import TAG_BASELINE

if TYPE_CHECKING:
    from zsexp.search.space import SearchSpace


@dataclass(frozen=True)
class Objective:
    """What status reports need of a sweep's search space: the objective and its direction."""
    metric: str
    mode: str

    @property
    def metric_key(self) -> str:
        return metric_key(self.metric)


def objective_of(meta: SweepMeta) -> Objective:
    """The sweep's objective from its stored (resolved) space; a space without one is parsed, which
    loads the model's spec for its default objective."""
    obj = (meta.space or {}).get("objective") or {}
    if isinstance(obj, dict) and isinstance(obj.get("metric"), str) and obj.get("mode") in ("max", "min"):
        return Objective(obj["metric"], obj["mode"])
    from zsexp.search.space import parse_space

    space = parse_space(meta.space, meta.space_source, meta.model)
    return Objective(space.metric, space.mode)


def summarise(meta: SweepMeta, space: SearchSpace, results: Any, wall_s: float) -> dict[str, Any]:
    """Counts, outcomes and the best trial.  The best trial and its best round come from the driver's
    durable record (the same best-round values Optuna was told): a trial's ``progress.csv`` in
    storage can be cut short by a kill, and a finished trial that Tune restarted ends without
    reporting again."""
    counts: dict[str, int] = {}
    by_id: dict[str, Any] = {}
    for r in results:
        status = "ERROR" if r.error else "TERMINATED"
        counts[status] = counts.get(status, 0) + 1
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name.split("_")[2]
        by_id[tid] = r
    progress = read_progress(meta.dir)
    values = {t: v for t, v in progress.get("best_ckpt", {}).items() if t in by_id and v.get("value") is not None}
    best = None
    if values:
        sign = 1.0 if space.mode == "max" else -1.0
        tid = max(values, key=lambda t: sign * values[t]["value"])
        r, rnd = by_id[tid], int(values[tid]["round"])
        ckpt, metrics = r.checkpoint, {}
        for c, m in r.best_checkpoints or []:
            if int(m.get("training_iteration", -1)) == rnd:
                ckpt, metrics = c, m
        best = {"trial_id": tid, "value": float(values[tid]["value"]), "round": rnd, "config": r.config,
                "checkpoint": ckpt.path if ckpt else None, "run_id": progress.get("runs", {}).get(tid),
                "metrics": {k: v for k, v in metrics.items() if str(k).startswith("val_")}}
    base, chance = reference_values(meta, space)
    return {"name": meta.name, "counts": counts, "outcomes": progress.get("outcomes", {}), "best": best,
            "compute": compute.sweep_total(progress.get("spent") or {}),
            "peak_concurrency": progress.get("peak", 0), "wall_s": wall_s, "n_trials": len(results),
            "baseline": base, "chance": chance,
            "margin": margin(best["value"] if best else None, base["value"] if base else None, space.mode)}


def reference_values(meta: SweepMeta, space: SearchSpace | Objective) -> tuple[dict | None, float | None]:
    """The baseline's validation objective (``{"model", "lam", "value"}``, None where the task has none or
    the sweep predates baselines) and chance of the objective, from the sweep's stored reference."""
    ref = meta.reference or {}
    b = ref.get("baseline")
    value = (b.get("val") or {}).get(space.metric) if b else None
    base = {"model": b["model"], "lam": b["lam"], "value": float(value)} if value is not None else None
    chance = (ref.get("chance") or {}).get(space.metric)
    return base, (float(chance) if chance is not None else None)


def reference_line(meta: SweepMeta, space: SearchSpace | Objective, best: float | None) -> str:
    """``baseline ridge (lam=0.1) val precision@50=39.00; best trial +2.30 over it; chance 16.67``."""
    base, chance = reference_values(meta, space)
    parts = []
    if base:
        parts.append(f"baseline {base['model']} (lam={base['lam']:g}) val {space.metric}={base['value']:.3f}")
        m = margin(best, base["value"], space.mode)
        if m is not None:
            parts.append(f"best trial {m:+.3f} {'over' if m >= 0 else 'BELOW'} it")
    elif (meta.reference or {}).get("error"):
        parts.append(meta.reference["error"])
    elif meta.reference is None:
        parts.append("no baseline recorded (sweep made before zsexp computed baselines)")
    else:
        parts.append(f"no baseline for val {space.metric}")
    if chance is not None:
        parts.append(f"chance {chance:.3f}")
    return "; ".join(parts)


def log_reference(c: Any, run_id: str, meta: SweepMeta, space: SearchSpace) -> None:
    """The baseline's and chance's validation objective on the sweep's MLflow parent run."""
    base, chance = reference_values(meta, space)
    if base:
        c.log_metric(run_id, f"baseline_{space.metric_key}", base["value"])
        c.set_tag(run_id, TAG_BASELINE, f"{base['model']} lam={base['lam']:g} "
                                            f"({meta.reference['baseline']['chosen_by']})")
    if chance is not None:
        c.log_metric(run_id, f"chance_{space.metric_key}", chance)


def print_summary(meta: SweepMeta, space: SearchSpace, s: dict[str, Any]) -> None:
    oc = list(s["outcomes"].values())
    print(f"[{meta.name}] finished in {s['wall_s']:.1f}s: {s['n_trials']} trials "
          f"({oc.count('completed')} completed, {oc.count('early-stopped')} early-stopped, {oc.count('failed')} "
          f"failed); peak concurrency {s['peak_concurrency']}")
    print(f"[{meta.name}] compute spent by its trials: {compute.describe(s['compute'])}")
    b = s.get("best")
    if not b:
        print(f"[{meta.name}] no trial reported {space.metric}")
        return
    print(f"[{meta.name}] best trial {b['trial_id']}: val {space.metric}={b['value']:.3f} at round {b['round']}")
    print("    config: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(b["config"].items())))
    print(f"    checkpoint: {b['checkpoint']}")
    print(f"    MLflow run: {b['run_id']} (parent {meta.parent_run_id}, experiment {meta.experiment!r})")
    print(f"    reference: {reference_line(meta, space, b['value'])}")
    show_links(meta, space)


def print_front(name: str, keys: list[str], front: list[dict[str, Any]]) -> None:
    """The Pareto front, a line per trial with every objective (a multi-objective sweep)."""
    print(f"[{name}] Pareto front on validation: {len(front)} trial(s) (MLflow tag zsexp.pareto = 'true')")
    print("    trial     " + "".join(f"{k:>24}" for k in keys))
    for p in front:
        print(f"    {p['trial']:<10}" + "".join(f"{p['values'][k]:>24.4f}" for k in keys))


def show_links(meta: SweepMeta, space: SearchSpace | None, ui: str | None = None) -> None:
    """Print the two MLflow UI links of the sweep's trials (a tracking outage only skips them).  Without
    ``space`` they are built from the durable record alone (the view the sweep published, its child
    runs), with no MLflow call: what ``zsexp status`` prints."""
    from zsexp.ui_links import DEFAULT_UI, compare_link, print_links, runs_link, share_key, sweep_links

    if space is None:
        runs = list(read_progress(meta.dir).get("runs", {}).values())[:500]
        ui = ui or DEFAULT_UI
        print_links(meta.name, {"runs": runs_link(ui, meta.experiment_id, share_key(meta.name)),
                                "compare": compare_link(ui, meta.experiment_id, runs)})
        return
    try:
        links = sweep_links(meta, space.metric_key, space.mode, sorted(space.params), ui or DEFAULT_UI,
                            tuple(space.metric_keys[1:]) if getattr(space, "multi", False) else ())
    except Exception as exc:  # noqa: BLE001 - links are a convenience; never fail a command for them
        print(f"[{meta.name}] (no MLflow UI links: {str(exc).splitlines()[0][:200]})")
        return
    print_links(meta.name, links)


def sweep_trials(meta: SweepMeta, space: SearchSpace) -> list[TrialRecord]:
    """Every trial of the sweep in Tune's order: id, status, rounds, best validation value, outcome, config
    (Tune's newest snapshot read as JSON, the best values and outcomes from the driver's durable record)."""
    trials = snapshot_trials(meta.dir)
    if trials is None:
        raise ValueError(f"{meta.dir}: no Tune snapshot yet")
    progress = read_progress(meta.dir)
    best, outcomes = progress.get("best_ckpt", {}), progress.get("outcomes", {})
    out = []
    for t in trials:
        tid, b = t["trial_id"], best.get(t["trial_id"], {})
        rounds = int(t["last_result"].get("training_iteration", 0) or 0)
        out.append(TrialRecord(trial_id=tid, status=t["status"], rounds=rounds, best=b.get("value"),
                               best_round=b.get("round"), outcome=outcomes.get(tid), config=t["config"]))
    return out


def _front(meta: SweepMeta) -> dict[str, Any] | None:
    """A multi-objective sweep's objectives and Pareto front (None for one objective)."""
    obj = (meta.space or {}).get("objective")
    if not (isinstance(obj, list) and len(obj) > 1):
        return None
    from zsexp.search.pareto import front
    from zsexp.search.space import parse_space

    space = parse_space(meta.space, meta.space_source, meta.model)
    return {"objectives": space.metric_keys, "modes": space.modes, "trials": front(meta, space)}


def list_sweeps(storage: str | None = None) -> list[dict[str, Any]]:
    """Every sweep under ``storage`` (read-only), oldest first: what ``zsexp status`` without a name shows.
    A sweep whose metadata cannot be read is listed with the reason instead of hiding the others."""
    rows = []
    for name in sweep_names(storage):
        try:
            st = sweep_status(name, storage)
        except Exception as exc:  # noqa: BLE001 - one broken sweep must not hide the rest
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        m, trials = st["meta"], st["trials"]
        rows.append({"name": m.name, "model": m.model, "dataset": m.dataset_name, "status": m.status,
                     "created": m.created, "trials": m.trials,
                     "finished": sum(t.status in ("TERMINATED", "ERROR") for t in trials),
                     "metric": st["metric"], "mode": st["mode"], "best": st["best"],
                     "baseline": (st["baseline"] or {}).get("value"), "margin": st["margin"], "chance": st["chance"]})
    rows.sort(key=lambda r: r.get("created", ""))
    return rows


def sweep_status(name: str, storage: str | None = None, trust_storage: bool = False) -> dict[str, Any]:
    """Read-only: the sweep's metadata, every trial's state and its best validation value.  Tune's state
    is read only once verified (:mod:`zsexp.search.integrity`); a snapshot cut by a kill shows no trials."""
    meta = read_meta(name, storage)
    space = objective_of(meta)
    if trust_storage:
        integrity.trust(Path(meta.dir))
    cut = integrity.check(Path(meta.dir))
    try:
        trials = [] if cut else sweep_trials(meta, space)
    except Exception:  # noqa: BLE001 - no experiment state yet
        trials = []
    bests = [t.best for t in trials if t.best is not None]
    best = (max(bests) if space.mode == "max" else min(bests)) if bests else None
    base, chance = reference_values(meta, space)
    spent = compute.sweep_total(read_progress(meta.dir).get("spent") or {})
    return {"meta": meta, "metric": space.metric, "mode": space.mode, "trials": trials, "best": best,
            "compute": spent, "front": None if cut else _front(meta),
            "baseline": base, "chance": chance, "margin": margin(best, base["value"] if base else None, space.mode),
            "reference": reference_line(meta, space, best)}
