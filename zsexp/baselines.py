"""The reference figures every model figure is shown beside: chance and the task's closed-form baseline.

:func:`task_baseline` fits the task's ridge model (``ModelSpec.baseline``) on the same split as the model
it is compared with.  Its one hyper-parameter is tuned the way the GANs are, on the validation classes
only: ``lam`` from :data:`LAM_GRID` by the validation objective of a fit on ``train``; the chosen value is
then refitted on the model's fit split (``train`` or ``train + val``) and evaluated there.  The test
classes never choose anything.  It costs a few linear solves (well under a second on the built-in data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from zsexp.config import to_dict
from zsexp.data import ZSLData
from zsexp.errors import ZsexpError
from zsexp.models import build_model, get_spec, make_config

LAM_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# evaluation keys the baseline takes from the model it is compared with (same queries, same K)
SHARED_EVAL_KEYS = ("query", "eval_k", "ks")


def chance_of(model: Any, splits: tuple[str, ...]) -> dict[str, dict[str, float]]:
    return {s: model.chance(s) for s in splits}


def task_baseline(family: str, data: ZSLData, fit_split: str = "train", per_query: bool = False,
                  model_cfg: Any = None) -> dict | None:
    """The baseline of ``family``'s task on ``data``: ``{"model", "config", "chosen_by", "val", "test",
    "chance"}`` (``val`` None when fitted on train + val); None for a family that is itself a baseline
    or a task without one (CM-GAN's sentence mode).  ``model_cfg``: the compared model's config, whose
    evaluation keys (:data:`SHARED_EVAL_KEYS`) the baseline adopts."""
    spec = get_spec(family)
    base = spec.baseline
    if base is None or getattr(model_cfg, "mode", "zsl") == "sentence":
        return None
    bspec = get_spec(base)
    objective = bspec.objective
    base_keys = {f.name for f in dataclasses.fields(bspec.config_cls)}
    shared = {k: v for k, v in (to_dict(model_cfg) if model_cfg is not None else {}).items()
              if k in SHARED_EVAL_KEYS and k in base_keys}
    best_lam, best_val = None, None
    for lam in LAM_GRID:                        # tuned on validation, like every model
        m = build_model(base, make_config(base, data, ("compared model", shared), ("baseline grid", {"lam": lam})),
                        data, fit_split="train")
        m.train_round()
        v = m.evaluate("val")[objective]
        if best_val is None or (v > best_val if bspec.mode == "max" else v < best_val):
            best_lam, best_val = lam, v
    cfg = make_config(base, data, ("compared model", shared), ("baseline", {"lam": best_lam}))
    model = build_model(base, cfg, data, fit_split=fit_split)
    model.train_round()
    val = model.evaluate("val") if fit_split == "train" else None
    test = bspec.evaluate_units(model, data, "test") if per_query else model.evaluate("test")
    test.pop("image_labels", None)
    return {"model": base, "config": to_dict(cfg), "objective": objective, "fit_split": fit_split,
            "chosen_by": f"validation {objective} over lam in {list(LAM_GRID)} (fit on train)",
            "val": val, "test": test,
            "chance": chance_of(model, ("val", "test") if fit_split == "train" else ("test",))}


def beside(metric: str, value: float, baseline: dict | None, chance: dict | None, split: str) -> str:
    """``precision@50 31.2 | ridge 39.0 | chance 16.7`` (the parts that exist)."""
    parts = [f"{metric} {value:.2f}"]
    if baseline and baseline.get(split) and metric in baseline[split]:
        parts.append(f"{baseline['model']} {baseline[split][metric]:.2f}")
    if chance and metric in chance:
        parts.append(f"chance {chance[metric]:.2f}")
    return " | ".join(parts)


def safe_baseline(family: str, data: ZSLData, fit_split: str, model_cfg: Any, log: Callable[[str], None],
                  per_query: bool = False) -> dict | None:
    """:func:`task_baseline`, or ``{"model", "error"}`` where it cannot be computed (e.g. features that
    overflow a float64 solve): the model's own figures are still reported, and ``log`` says why the
    baseline is missing."""
    try:
        return task_baseline(family, data, fit_split, per_query=per_query, model_cfg=model_cfg)
    except (ZsexpError, ValueError, RuntimeError) as exc:
        error = f"the baseline could not be computed: {str(exc).splitlines()[0][:300]}"
        log(f"[{family}] WARNING: {error}")
        return {"model": get_spec(family).baseline, "error": error}


def sweep_reference(family: str, data: ZSLData, fixed: dict[str, Any]) -> dict[str, Any]:
    """What a sweep of ``family`` is measured against on the validation classes: the task's baseline
    (tuned on validation, fitted on train, exactly like the sweep's trials) and chance."""
    cfg = make_config(family, data, ("search space fixed", fixed))
    base = safe_baseline(family, data, "train", cfg, log=lambda _m: None)   # the summary says why it is missing
    if base is not None and "error" in base:
        return {"baseline": None, "chance": {}, "error": base["error"]}
    if base is not None:
        return {"baseline": {"model": base["model"], "lam": base["config"]["lam"], "chosen_by": base["chosen_by"],
                             "val": base["val"]}, "chance": base["chance"]["val"]}
    if get_spec(family).baseline is None:      # a baseline family: its own chance costs nothing
        return {"baseline": None, "chance": build_model(family, cfg, data).chance("val")}
    return {"baseline": None, "chance": {}}
