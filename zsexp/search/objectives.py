"""A sweep's objectives: one ``{metric, mode}``, or a list of them (a multi-objective sweep).

``objective:`` in a search space is a mapping (one objective, as before) or a list of mappings, for
example CM-GAN's ZSL and GZSL figures, ZSCRGAN's ``precision@50`` and ``map@50``, or a quality metric
and what the trial cost (``compute_wall_s``, ``compute_cpu_s``, ``compute_gpu_s``; ``min``).

With several objectives:

* the sampler is Optuna's multi-objective one: ``tpe`` (the default: MOTPE models each objective and is
  sample-efficient at the budgets of tens of trials a sweep here has; NSGA-II, ``nsga2``, evolves a
  population, 50 by default, and needs several generations of it before it beats random search),
  ``nsga2``, ``random``, ``qmc`` or ``gp``; ``cmaes`` and ``grid`` optimise one objective and are
  refused;
* early stopping is off: ASHA promotes the top of each rung by one metric, and ranking several
  objectives at a rung needs a rule of its own (non-dominated sorting, as MO-ASHA does) that Ray's ASHA
  does not have, so ``scheduler: asha`` (or ``--scheduler asha``) is refused in one line that says so;
  the default scheduler of a multi-objective space is ``none``;
* each trial is told its last round's values (with one objective, the best round's value: "best round"
  has no single meaning for several);
* the Pareto front is Optuna's own (``study.best_trials``), restricted to the sweep's own trials.
"""

from __future__ import annotations

from typing import Any

from zsexp.errors import ZsexpError
from zsexp.search.compute import KEYS as COMPUTE_KEYS

MULTI_SAMPLERS = ("tpe", "nsga2", "random", "qmc", "gp")
MAX_OBJECTIVES = 4


def _err(source: str, key: str, why: str) -> ZsexpError:
    return ZsexpError(f"{source}: `{key}` {why}")


def parse_objectives(raw: dict[str, Any], source: str, spec: Any) -> tuple[tuple[str, str], ...]:
    """The space's objectives as ``((metric, mode), ...)``; every error names the file, the key and the
    allowed values."""
    obj = raw.get("objective")
    if obj is None or obj == {}:
        return ((spec.objective, spec.mode),)
    allowed = [*spec.objectives, *COMPUTE_KEYS]
    if isinstance(obj, dict):
        entries, keys = [obj], ["objective"]
    elif isinstance(obj, list) and obj:
        entries, keys = obj, [f"objective[{i}]" for i in range(len(obj))]
    else:
        raise _err(source, "objective", "must be a mapping {metric, mode} or a non-empty list of them")
    if len(entries) > MAX_OBJECTIVES:
        raise _err(source, "objective", f"has {len(entries)} entries; at most {MAX_OBJECTIVES} objectives")
    out: list[tuple[str, str]] = []
    for entry, key in zip(entries, keys, strict=True):
        if not isinstance(entry, dict) or sorted(set(entry) - {"metric", "mode"}):
            raise _err(source, key, "must be a mapping with the keys metric and mode")
        metric = entry.get("metric", spec.objective if len(entries) == 1 else None)
        if metric not in allowed:
            raise _err(source, f"{key}.metric", f"must be one of {allowed}, got {metric!r}")
        mode = entry.get("mode", spec.mode if metric in spec.objectives else "min")
        if mode not in ("min", "max"):
            raise _err(source, f"{key}.mode", f"must be min or max, got {mode!r}")
        if any(m == metric for m, _ in out):
            raise _err(source, f"{key}.metric", f"names {metric!r} a second time; each objective once")
        out.append((metric, mode))
    if out[0][0] in COMPUTE_KEYS:
        raise _err(source, keys[0] + ".metric", f"is {out[0][0]!r}: the first objective must be a quality metric "
                                               f"(one of {list(spec.objectives)}); it scores checkpoints and the "
                                               f"progress line, and compute alone would pick the cheapest trial "
                                               f"whatever its quality")
    return tuple(out)


def check_multi(objectives: tuple[tuple[str, str], ...], sampler: str, scheduler: str, source: str) -> None:
    """Several objectives need a sampler that ranks them and no single-metric early stopping."""
    if len(objectives) < 2:
        return
    if sampler not in MULTI_SAMPLERS:
        raise _err(source, "sampler.name", f"{sampler!r} optimises one objective; with {len(objectives)} objectives "
                                           f"use one of {list(MULTI_SAMPLERS)} (default tpe)")
    if scheduler == "asha":
        raise _err(source, "scheduler", "asha ranks a rung's trials by one metric and cannot rank several "
                                        "objectives (that needs non-dominated sorting, as MO-ASHA does); use "
                                        "`scheduler: none` for a multi-objective sweep")


def default_scheduler(raw: dict[str, Any]) -> str:
    """``asha``, or ``none`` for a multi-objective space that names no scheduler."""
    obj = raw.get("objective")
    return "none" if isinstance(obj, list) and len(obj) > 1 else "asha"
