"""The Pareto front of a multi-objective sweep: Optuna's own (``study.best_trials``), where users look.

The front is computed by the study over every finished trial it holds (a ``--warm-start`` sweep's
history included, so an earlier trial may dominate); the sweep's own trials on it are the ones shown:
``zsexp status SWEEP`` lists them with every objective, their MLflow child runs carry the tag
``zsexp.pareto = true`` (the others ``false``), and the parent run gets ``pareto_front.json`` and a plot
of the front on validation (``pareto_front.png``: the first two objectives; the front's points joined).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from zsexp.meta import SweepMeta
from zsexp.ui_links import TAG_PARETO


def front(meta: SweepMeta, space: Any) -> list[dict[str, Any]]:
    """The sweep's trials on the study's Pareto front: ``{"trial", "number", "values": {key: value}}``,
    sorted by the first objective (best first)."""
    import optuna

    from zsexp.search.optuna_search import LOST_ATTR, TUNE_ID_ATTR, WARM_ATTR, journal_storage

    try:
        study = optuna.load_study(study_name=meta.name, storage=journal_storage(meta.dir))
    except KeyError:
        return []
    keys = space.metric_keys
    out = []
    for t in study.best_trials:
        tid = t.user_attrs.get(TUNE_ID_ATTR)
        if not tid or t.user_attrs.get(LOST_ATTR) or t.user_attrs.get(WARM_ATTR) or not t.values:
            continue
        out.append({"trial": tid, "number": t.number, "values": dict(zip(keys, map(float, t.values), strict=True))})
    sign = -1.0 if space.modes[0] == "max" else 1.0
    return sorted(out, key=lambda p: sign * p["values"][keys[0]])


def publish(c: Any, meta: SweepMeta, space: Any, runs: dict[str, str]) -> list[dict[str, Any]]:
    """Tag every child run on or off the front; the front as JSON and a plot on the parent run."""
    points = front(meta, space)
    on = {p["trial"] for p in points}
    for tid, run_id in runs.items():
        c.set_tag(run_id, TAG_PARETO, "true" if tid in on else "false")
    for p in points:
        p["run_id"] = runs.get(p["trial"])
    c.log_text(meta.parent_run_id, json.dumps({"objectives": space.metric_keys, "modes": space.modes,
                                                "front": points}, indent=2), "pareto_front.json")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "pareto_front.png"
        if _plot(meta, space, points, png):
            c.log_artifact(meta.parent_run_id, str(png))
    return points


def _plot(meta: SweepMeta, space: Any, points: list[dict[str, Any]], path: Path) -> bool:
    """Every finished trial of the sweep (grey) and the front (joined), first objective against second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    from zsexp.search.optuna_search import TUNE_ID_ATTR, journal_storage

    k1, k2 = space.metric_keys[:2]
    study = optuna.load_study(study_name=meta.name, storage=journal_storage(meta.dir))
    every = [t.values[:2] for t in study.get_trials(deepcopy=False)
             if t.values and t.user_attrs.get(TUNE_ID_ATTR) and all(map(math.isfinite, t.values[:2]))]
    if not every:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([v[0] for v in every], [v[1] for v in every], c="0.7", s=18, label="trials")
    pts = sorted((p["values"][k1], p["values"][k2]) for p in points)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", c="C3", label="Pareto front")
    ax.set_xlabel(f"{k1} ({space.modes[0]})")
    ax.set_ylabel(f"{k2} ({space.modes[1]})")
    ax.set_title(f"{meta.name}: Pareto front on validation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def spread(n: int, k: int) -> list[int]:
    """``k`` indices of ``0..n-1`` spread evenly, both ends included (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def front_candidates(meta: SweepMeta, space: Any, trials: list[Any], metric: str, k: int) -> list[dict[str, Any]]:
    """A multi-objective sweep's selection candidates: its Pareto front, sorted by the deciding objective
    ``metric`` (best first), and at most ``k`` of them spread evenly along that order (the best and the
    other end of the front always among them); each keeps the round its trial ended at, the round whose
    values the study was told."""
    key = space.single(metric).metric_key
    by_id = {t.trial_id: t for t in trials}
    sign = -1.0 if dict(space.objectives)[metric] == "max" else 1.0
    points = sorted((p for p in front(meta, space) if p["trial"] in by_id), key=lambda p: sign * p["values"][key])
    out = []
    for order in spread(len(points), k):
        p, t = points[order], by_id[points[order]["trial"]]
        out.append({"trial_id": t.trial_id, "value": p["values"][key], "order": order, "round": t.rounds,
                    "params": {n: t.config[n] for n in sorted(space.params) if n in t.config},
                    "front": p["values"]})
    return out
