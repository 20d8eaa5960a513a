"""An ablation job's plan: the base configuration (the dataset's defaults, or a sweep's winner and budget), the
rows, the data splits, the resources and where it is tracked, all checked before anything runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsexp.ablation.options import AblateOptions
from zsexp.ablation.variants import Variant, resolve_variants
from zsexp.errors import ZsexpError

MAX_SEEDS, MAX_SPLITS, MAX_RUNS = 100, 100, 10_000
UNLIMITED_ROUNDS = 1_000_000


@dataclass
class Plan:
    """What the runs share: the trial metadata (model, dataset, fixed keys, device), the searched values
    of a sweep's winner, the budget, and where they come from."""

    model: str
    dataset: str
    dataset_name: str
    tmeta: dict[str, Any]
    flat: dict[str, Any]
    budget: int | None
    base: str                                  # "dataset defaults" or "sweep S, ..."
    options: dict[str, Any]                    # resources, as a sweep's
    tracking_uri: str
    experiment: str
    data_seeds: tuple[int, ...]
    variants: list[Variant] = field(default_factory=list)
    datas: dict[int, Any] = field(default_factory=dict, repr=False)    # each split, loaded once

    def identity(self) -> dict[str, Any]:
        fixed = {k: self.tmeta["fixed"][k] for k in sorted(self.tmeta["fixed"])}
        return {"model": self.model, "dataset": self.dataset, "fixed": fixed, "flat": self.flat,
                "budget": self.budget, "base": self.base}


# --------------------------------------------------------------------------- one run
def _check_counts(o: AblateOptions) -> None:
    if not 1 <= o.seeds <= MAX_SEEDS:
        raise ZsexpError(f"--seeds must be in 1..{MAX_SEEDS}, got {o.seeds}")
    if o.data_seeds is not None:
        if not 1 <= len(o.data_seeds) <= MAX_SPLITS:
            raise ZsexpError(f"--data-seeds takes 1..{MAX_SPLITS} seeds, got {len(o.data_seeds)}")
        if any(s < 0 for s in o.data_seeds):
            raise ZsexpError(f"--data-seeds must be non-negative, got {list(o.data_seeds)}")


def _base_overrides(o: AblateOptions) -> dict[str, Any]:
    from zsexp.config import load_yaml, parse_set

    fixed: dict[str, Any] = {}
    if o.config_file:
        loaded = load_yaml(o.config_file) or {}
        if not isinstance(loaded, dict):
            raise ZsexpError(f"{o.config_file}: expected a mapping of key: value, got {type(loaded).__name__}")
        fixed.update(loaded)
    fixed.update(parse_set(o.sets))
    return fixed


def _winner_of(meta: Any) -> tuple[dict[str, Any], int | None, str]:
    """The configuration ``zsexp select`` registered for the sweep (its latest finished selection), else
    the sweep's top-ranked one; each with the round budget it was chosen at.  Read as JSON only."""
    from zsexp.search.space import parse_space
    from zsexp.search.status import sweep_trials
    from zsexp.selection import rank_configs

    space = parse_space(meta.space, meta.space_source, meta.model)
    done = sorted(Path(meta.dir).glob("selection-k*-s*/selection.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(done):
        try:
            sel = json.loads(path.read_text())
            w = next(s for s in sel["summary"] if s["candidate"] == sel["winner"])
            params, budget = dict(w["params"]), int(w["budget_rounds"])
            if budget < 1:
                raise ValueError("no budget")
        except (OSError, ValueError, KeyError, TypeError, StopIteration):
            continue
        unknown = sorted(set(params) - set(space.params))
        if unknown:
            raise ZsexpError(f"{path}: the winner has keys {unknown} the sweep did not search; the file was edited")
        return params, budget, f"sweep {meta.name}: winner of its final selection ({path.parent.name})"
    try:
        ranked = rank_configs(sweep_trials(meta, space), space)
    except ValueError:
        ranked = []
    if not ranked:
        raise ZsexpError(f"sweep {meta.name!r} has no completed trial with val {space.metric}; nothing to ablate")
    top = ranked[0]
    return dict(top["params"]), int(top["round"]), (f"sweep {meta.name}: its best trial {top['trial_id']} "
                                                     f"(val {space.metric} {top['value']:.3f}; no final selection yet)")


def make_plan(o: AblateOptions) -> Plan:
    from zsexp.data import load_dataset
    from zsexp.models import get_spec
    from zsexp.search.cluster import validate_resources

    _check_counts(o)
    get_spec(o.model)
    variants = resolve_variants(o.model, o.variants)
    fixed = _base_overrides(o)
    opts = {"gpus": 0.0, "gpus_per_trial": None, "cpus_per_trial": 1.0, "max_concurrent": None}
    base = _from_sweep(o, fixed, opts) if o.source else _from_defaults(o, fixed)
    for k, v in (("gpus", o.gpus), ("gpus_per_trial", o.gpus_per_trial), ("cpus_per_trial", o.cpus_per_trial),
                 ("max_concurrent", o.max_concurrent)):
        if v is not None:
            opts[k] = v
    validate_resources(opts["gpus"], opts["gpus_per_trial"], opts["cpus_per_trial"], opts["max_concurrent"])
    data_seeds = base["data_seeds"]
    datas = {d: load_dataset(base["dataset"], seed=d) for d in data_seeds}
    name = datas[data_seeds[0]].name
    plan = Plan(model=o.model, dataset=base["dataset"], dataset_name=name, tmeta=base["tmeta"], flat=base["flat"],
                budget=base["budget"], base=base["base"], options=opts,
                tracking_uri=o.tracking_uri or base["tracking_uri"],
                experiment=base["experiment"] or f"zsexp-{o.model}-{name}", data_seeds=data_seeds,
                variants=variants, datas=datas)
    if len(variants) * o.seeds * len(data_seeds) > MAX_RUNS:
        raise ZsexpError(f"{len(variants)} variants x {o.seeds} seeds x {len(data_seeds)} splits is more than "
                         f"{MAX_RUNS} runs")
    _check_configs(plan)
    return plan


def _from_sweep(o: AblateOptions, fixed: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """``--from SWEEP``: the sweep's winner and budget on the sweep's own data split, its resources (into
    ``opts``) and its MLflow experiment."""
    from zsexp.data import dataset_ref
    from zsexp.search.storage import read_meta

    meta = read_meta(o.source, o.sweep_storage)
    if meta.model != o.model:
        raise ZsexpError(f"--from {o.source}: that sweep tuned {meta.model}, not {o.model}")
    if o.dataset and dataset_ref(o.dataset) != dataset_ref(meta.dataset):
        raise ZsexpError(f"--from {o.source}: that sweep ran on {meta.dataset!r}, not {o.dataset!r}; leave "
                         f"--dataset out")
    own = int(meta.trial_meta.get("data_seed", 0))
    if o.data_seeds and set(o.data_seeds) != {own}:
        raise ZsexpError(f"--from {o.source}: the sweep chose its configuration on the validation classes of "
                         f"data split {own}; on another split those classes may be test classes, so only "
                         f"--data-seeds {own} is allowed (ablate the dataset defaults for several splits)")
    flat, budget, base = _winner_of(meta)
    tmeta = {k: meta.trial_meta[k] for k in ("model", "dataset", "data_seed", "fixed", "max_rounds")}
    tmeta["dataset"] = dataset_ref(tmeta["dataset"])        # sweeps made before paths were made absolute
    tmeta["fixed"] = {**tmeta["fixed"], **fixed}
    tmeta["device"] = o.device if o.device != "auto" else meta.trial_meta.get("device", "auto")
    opts.update({k: meta.options.get(k, v) for k, v in opts.items()})
    if fixed:
        base += f", with {', '.join(f'{k}={v}' for k, v in fixed.items())}"
    return {"dataset": tmeta["dataset"], "data_seeds": (own,), "tmeta": tmeta, "flat": flat, "budget": budget,
            "base": base, "tracking_uri": meta.tracking_uri, "experiment": o.experiment or meta.experiment}


def _from_defaults(o: AblateOptions, fixed: dict[str, Any]) -> dict[str, Any]:
    """No sweep: the dataset's defaults (with ``--config`` / ``--set``) on each requested split."""
    from zsexp.data import dataset_ref
    from zsexp.paths import default_tracking_uri

    dataset = dataset_ref(o.dataset or "synthetic-tiny")     # runs happen in their own working directory
    data_seeds = tuple(dict.fromkeys(o.data_seeds or (0,)))
    tmeta = {"model": o.model, "dataset": dataset, "data_seed": data_seeds[0], "fixed": fixed,
             "max_rounds": UNLIMITED_ROUNDS, "device": o.device}
    base = "dataset defaults" + (f" with {', '.join(f'{k}={v}' for k, v in fixed.items())}" if fixed else "")
    return {"dataset": dataset, "data_seeds": data_seeds, "tmeta": tmeta, "flat": {}, "budget": None,
            "base": base, "tracking_uri": default_tracking_uri(), "experiment": o.experiment}


def _check_configs(plan: Plan) -> None:
    """Every variant's config on every split, built before anything runs: a bad key or value is one error
    naming the variant."""
    from zsexp.search.trainable import config_for

    for d, data in plan.datas.items():
        tmeta = dict(plan.tmeta, data_seed=d)
        for v in plan.variants:
            try:
                config_for(tmeta, data, plan.flat, v.overrides)
            except ZsexpError as exc:
                raise ZsexpError(f"--variants {v.key}: {exc}") from None


