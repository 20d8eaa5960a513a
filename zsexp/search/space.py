"""Search-space YAML -> validated :class:`SearchSpace` -> Optuna distributions.

File format (see ``search_spaces/*.yaml``)::

    model: zscrgan
    objective: {metric: precision@50, mode: max}   # on the VALIDATION classes
    fidelity: {max_rounds: 30, grace_rounds: 3, reduction_factor: 3}   # rounds = E-M iterations / step slices
    # or, when the searched keys change the updates per round (ZSCRGAN's updates_per_step, CM-GAN's
    # iters_per_step), ASHA's axis in optimiser updates, so its rungs compare trials at equal compute:
    # fidelity: {unit: updates, max_rounds: 30, grace_updates: 300, max_updates: 3000, reduction_factor: 3}
    sampler: {name: tpe, n_startup_trials: 5}      # tpe | random | cmaes | qmc | gp | grid
    scheduler: asha                               # asha | none
    fixed: {em_schedule: linear}                  # config keys held constant
    params:                                       # searched config keys
      alpha: {type: uniform, low: 0.1, high: 2.0}
      lr_g:  {type: loguniform, low: 1.0e-5, high: 1.0e-3}
      d_steps: {type: int, low: 1, high: 10}
      batch_size: {type: categorical, choices: [32, 64, 128]}
      lambda_c[1]: {type: loguniform, low: 0.5, high: 20}   # one element of a list-valued key

``sampler: grid`` runs the paper-style grid search: every param must be ``categorical`` (its
``choices`` are the grid values) and a sweep runs at most one trial per grid point, in an order
shuffled by the sweep's seed (``--trials`` below the grid size runs a seeded subset).

Everything is checked against the model's config dataclass before any Ray process starts:
unknown keys, empty ranges, a log range that includes 0, values of the wrong type or outside
the key's allowed range -- each error names the file, the key and the reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import optuna

from zsexp.config import build_config, load_yaml
from zsexp.errors import ZsexpError
from zsexp.models import MODELS, get_spec
from zsexp.names import metric_key
from zsexp.search.objectives import check_multi, default_scheduler, parse_objectives

TOP_KEYS = {"model", "objective", "fidelity", "sampler", "scheduler", "fixed", "params", "description"}
PARAM_TYPES = {"uniform", "loguniform", "int", "logint", "categorical"}
SAMPLERS = ("tpe", "nsga2", "random", "cmaes", "qmc", "gp", "grid")
_INDEXED = re.compile(r"^(\w+)\[(\d+)\]$")

@dataclass
class SearchSpace:
    model: str
    metric: str
    mode: str
    max_rounds: int
    grace_rounds: int
    reduction_factor: float
    unit: str
    grace_updates: int
    max_updates: int
    sampler: str
    sampler_args: dict[str, Any]
    scheduler: str
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]]
    source: str = "<memory>"
    raw: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[tuple[str, str], ...] = ()     # every (metric, mode); the first is metric, mode

    @property
    def metric_key(self) -> str:
        return metric_key(self.metric)

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def metric_keys(self) -> list[str]:
        return [metric_key(m) for m, _ in self.objectives or ((self.metric, self.mode),)]

    @property
    def modes(self) -> list[str]:
        return [mode for _, mode in self.objectives or ((self.metric, self.mode),)]

    def single(self, metric: str) -> SearchSpace:
        """This space with one objective, ``metric`` (one of its own): what a selection decides on."""
        mode = dict(self.objectives or ((self.metric, self.mode),))[metric]
        return dataclasses.replace(self, metric=metric, mode=mode, objectives=((metric, mode),))

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for key, p in self.params.items():
            t = p["type"]
            if t == "categorical":
                out[key] = optuna.distributions.CategoricalDistribution(list(p["choices"]))
            elif t in ("int", "logint"):
                out[key] = optuna.distributions.IntDistribution(int(p["low"]), int(p["high"]), log=t == "logint")
            else:
                out[key] = optuna.distributions.FloatDistribution(float(p["low"]), float(p["high"]),
                                                                  log=t == "loguniform")
        return out

    @property
    def grid_size(self) -> int | None:
        """The number of grid points of a ``grid`` sampler (None for the others)."""
        if self.sampler != "grid":
            return None
        return int(math.prod(len(p["choices"]) for p in self.params.values()))

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        args = dict(self.sampler_args)
        if self.sampler == "grid":
            from zsexp.search.optuna_search import TuneGridSampler

            return TuneGridSampler({k: list(p["choices"]) for k, p in self.params.items()}, seed=seed)
        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **args)
        if self.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, **args)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed, **args)
        if self.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **args)
        if self.sampler == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **args)
        return optuna.samplers.GPSampler(seed=seed, **args)


def trial_overrides(config_cls: type, dataset_defaults: dict[str, Any], fixed: dict[str, Any],
                    flat: dict[str, Any]) -> dict[str, Any]:
    """Config overrides of one trial: ``fixed`` plus its sampled ``flat`` params.  A ``key[i]`` param
    replaces element i of the list value ``key`` takes from fixed, dataset defaults or class defaults."""
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in fixed.items()}
    class_defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                      for f in dataclasses.fields(config_cls)}
    for key, value in flat.items():
        m = _INDEXED.match(key)
        if not m:
            out[key] = value
            continue
        name, i = m.group(1), int(m.group(2))
        current = list(out.get(name, dataset_defaults.get(name, class_defaults[name])))
        while len(current) <= i:
            current.append(current[-1] if current else value)
        current[i] = value
        out[name] = current
    return out


def _err(source: str, key: str, reason: str) -> ZsexpError:
    return ZsexpError(f"{source}: `{key}`: {reason}")


def _check_param(source: str, key: str, p: Any, field_type: Any, config_cls: type) -> dict[str, Any]:
    where = f"params.{key}"
    if not isinstance(p, dict) or "type" not in p:
        raise _err(source, where, "must be a mapping with `type` (uniform, loguniform, int, logint, categorical)")
    t = p["type"]
    if t not in PARAM_TYPES:
        raise _err(source, where, f"unknown type {t!r}; allowed: {', '.join(sorted(PARAM_TYPES))}")
    allowed = {"type", "choices"} if t == "categorical" else {"type", "low", "high"}
    extra = sorted(set(p) - allowed)
    if extra:
        raise _err(source, where, f"unknown field(s) {extra} for type {t}; allowed: {sorted(allowed)}")
    base = get_origin(field_type) is list and get_args(field_type)[0] or field_type
    if t == "categorical":
        choices = p.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _err(source, where, "categorical needs a non-empty list `choices`")
        values = choices
    else:
        if "low" not in p or "high" not in p:
            raise _err(source, where, f"type {t} needs `low` and `high`")
        lo, hi = p["low"], p["high"]
        for name, v in (("low", lo), ("high", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise _err(source, where, f"`{name}` must be a number, got {v!r}")
        if t in ("int", "logint"):
            if base is not int:
                raise _err(source, where, f"type {t} needs an integer key, but `{key}` is {base.__name__}")
            if int(lo) != lo or int(hi) != hi:
                raise _err(source, where, f"int bounds must be integers, got low={lo}, high={hi}")
        elif base is not float:
            raise _err(source, where, f"type {t} samples floats, but `{key}` is {getattr(base, '__name__', base)}")
        if not lo < hi:
            raise _err(source, where, f"empty range: `low < high` must hold, got low={lo}, high={hi}")
        if t in ("loguniform", "logint") and lo <= 0:
            raise _err(source, where, f"a log range must be positive, got low={lo}")
        values = [lo, hi]
    # every value the sampler can produce must be a valid config value
    name = _INDEXED.match(key).group(1) if _INDEXED.match(key) else key
    for v in values:
        test_value = [v] if get_origin(field_type) is list and _INDEXED.match(key) else v
        try:
            build_config(config_cls, (f"{source}: params.{key}", {name: test_value}))
        except ZsexpError as exc:
            raise ZsexpError(str(exc).replace("must be", "values must be", 1)) from None
    return dict(p)


def parse_space(raw: Any, source: str, model: str | None = None) -> SearchSpace:
    """A search space from its YAML mapping, every key checked against the model's config: errors name
    ``source``, the key and the reason."""
    if not isinstance(raw, dict):
        raise ZsexpError(f"{source}: a search space must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ZsexpError(f"{source}: unknown top-level key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    fam = raw.get("model", model)
    if fam not in MODELS:
        raise _err(source, "model", f"must be one of {sorted(MODELS)}, got {fam!r}")
    if model and fam != model:
        raise _err(source, "model", f"this file is for {fam!r} but the sweep is for {model!r}")
    spec = get_spec(fam)
    objectives = parse_objectives(raw, source, spec)
    metric, mode = objectives[0]
    fid = _fidelity(raw, source, fam, spec)
    name, sampler_args = _sampler(raw, source)
    sched = raw.get("scheduler", default_scheduler(raw))
    if sched not in ("asha", "none"):
        raise _err(source, "scheduler", f"must be asha or none, got {sched!r}")
    check_multi(objectives, name, sched, source)
    fixed, params = _params(raw, source, fam, spec.config_cls)
    if name == "grid":
        ranged = sorted(k for k, p in params.items() if p["type"] != "categorical")
        if ranged:
            raise _err(source, f"params.{ranged[0]}", "the grid sampler needs `type: categorical` with the grid "
                                                      f"values as `choices` for every param (not: {', '.join(ranged)})")
    _refuse_inert(source, spec, fixed, params)
    return SearchSpace(model=fam, metric=metric, mode=mode, **fid, sampler=name, sampler_args=sampler_args,
                       scheduler=sched, fixed=fixed, params=params, source=source, raw=raw, objectives=objectives)


# what a trial's budget and a sampler's counts may be (the configs' own bounds agree)
MAX_ROUNDS, MAX_UPDATES, MAX_SAMPLER_COUNT = 100_000, 10**10, 100_000


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fidelity(raw: dict[str, Any], source: str, fam: str, spec: Any) -> dict[str, Any]:
    """ASHA's axis: rounds, or the trial's cumulative optimiser updates (``unit: updates``)."""
    fid = raw.get("fidelity") or {}
    fid_keys = {"unit", "max_rounds", "grace_rounds", "reduction_factor", "grace_updates", "max_updates"}
    if not isinstance(fid, dict) or sorted(set(fid) - fid_keys):
        raise _err(source, "fidelity", f"allowed keys: {', '.join(sorted(fid_keys))}")
    unit = fid.get("unit", "rounds")
    if unit not in ("rounds", "updates"):
        raise _err(source, "fidelity.unit", f"must be rounds or updates, got {unit!r}")
    grace_u, max_u = fid.get("grace_updates", 0), fid.get("max_updates", 0)
    if unit == "updates":
        if not spec.counts_updates:
            raise _err(source, "fidelity.unit", f"{fam} has no optimiser updates to count; use rounds")
        if not _count(max_u) or not 1 <= max_u <= MAX_UPDATES:
            raise _err(source, "fidelity.max_updates", f"must be an integer in [1, {MAX_UPDATES:,}], got {max_u!r}")
        if not _count(grace_u) or not 1 <= grace_u <= max_u:
            raise _err(source, "fidelity.grace_updates",
                       f"must be an integer in [1, max_updates={max_u}], got {grace_u!r}")
    elif "grace_updates" in fid or "max_updates" in fid:
        raise _err(source, "fidelity", "grace_updates / max_updates need `unit: updates`")
    max_rounds = fid.get("max_rounds", 30)
    grace = fid.get("grace_rounds", 1)
    rf = fid.get("reduction_factor", 3)
    if not _count(max_rounds) or not 1 <= max_rounds <= MAX_ROUNDS:
        raise _err(source, "fidelity.max_rounds", f"must be an integer in [1, {MAX_ROUNDS:,}], got {max_rounds!r}")
    if not _count(grace) or not 1 <= grace <= max_rounds:
        raise _err(source, "fidelity.grace_rounds",
                   f"must be an integer in [1, max_rounds={max_rounds}], got {grace!r}")
    if isinstance(rf, bool) or not isinstance(rf, (int, float)) or not 1 < rf <= 100:      # NaN fails too
        raise _err(source, "fidelity.reduction_factor", f"must be a number in (1, 100], got {rf!r}")
    return {"max_rounds": max_rounds, "grace_rounds": grace, "reduction_factor": float(rf), "unit": unit,
            "grace_updates": grace_u, "max_updates": max_u}


def _sampler(raw: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    samp = raw.get("sampler") or {"name": "tpe"}
    if isinstance(samp, str):
        samp = {"name": samp}
    if not isinstance(samp, dict):
        raise _err(source, "sampler", f"must be a name or a mapping {{name, options...}}, got {samp!r}")
    name = samp.get("name", "tpe")
    if name not in SAMPLERS:
        raise _err(source, "sampler.name", f"must be one of {list(SAMPLERS)}, got {name!r}")
    sampler_args = {k: v for k, v in samp.items() if k != "name"}
    if name == "grid" and sampler_args:
        raise _err(source, "sampler", f"the grid sampler takes no options, got {sorted(sampler_args)}")
    for key, v in sampler_args.items():        # counts (start-up trials, EI candidates) cost memory per trial
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, int) and not 0 <= v <= MAX_SAMPLER_COUNT:
            raise _err(source, f"sampler.{key}", f"must be in [0, {MAX_SAMPLER_COUNT:,}], got {v}")
        if isinstance(v, float) and not (math.isfinite(v) and abs(v) <= 1e6):
            raise _err(source, f"sampler.{key}", f"must be a finite number of at most 1e6, got {v!r}")
    return name, sampler_args


def _params(raw: dict[str, Any], source: str, fam: str, cfg_cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fixed keys (checked as a config) and the searched ones (each a known, in-range distribution)."""
    hints = get_type_hints(cfg_cls)
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise _err(source, "fixed", "must be a mapping of config keys")
    build_config(cfg_cls, (f"{source}: fixed", fixed))          # unknown keys / bad values
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict) or not params_raw:
        raise _err(source, "params", "must be a non-empty mapping of searched config keys")
    params = {}
    for key, p in params_raw.items():
        m = _INDEXED.match(str(key))
        base_key = m.group(1) if m else key
        if base_key not in hints:
            allowed = ", ".join(sorted(hints))
            raise _err(source, f"params.{key}", f"unknown hyper-parameter for {fam}; allowed: {allowed}")
        if m and get_origin(hints[base_key]) is not list:
            raise _err(source, f"params.{key}", f"`{base_key}` is not a list, so it cannot be indexed")
        if base_key in fixed:
            raise _err(source, f"params.{key}", "is also listed under `fixed`")
        params[str(key)] = _check_param(source, str(key), p, hints[base_key], cfg_cls)
    return fixed, params


def _refuse_inert(source: str, spec: Any, fixed: dict[str, Any], params: dict[str, Any]) -> None:
    """A searched key that cannot change training under the fixed keys wastes every trial's budget."""
    searched = {(_INDEXED.match(k).group(1) if _INDEXED.match(k) else k) for k in params}
    defaults = {f.name: f.default for f in dataclasses.fields(spec.config_cls)
                if f.default is not dataclasses.MISSING}
    for key in sorted(searched):
        rule = spec.inert_when.get(key)
        if rule is None:
            continue
        other, inert, why = rule
        if other in searched:          # the other key varies: the searched one acts in some trials
            continue
        value = fixed.get(other, defaults.get(other))
        if value in inert:
            raise _err(source, f"params.{key}", f"cannot change training while {other}={value} "
                                                f"({'fixed' if other in fixed else 'default'}): {why}")


def default_space_path(model: str) -> Path:
    """``$ZSEXP_SEARCH_SPACES/MODEL.yaml`` if set (installed packages, the docker image), else the
    ``search_spaces/`` folder of the source tree this package runs from."""
    base = os.environ.get("ZSEXP_SEARCH_SPACES")
    root = Path(base) if base else Path(__file__).resolve().parents[2] / "search_spaces"
    return root / f"{model}.yaml"


def load_space(path: str | Path | None, model: str) -> SearchSpace:
    if path is None:
        path = default_space_path(model)
        if not path.is_file():
            raise ZsexpError(f"no default search space for {model} at {path}; pass --space FILE or set "
                             f"ZSEXP_SEARCH_SPACES to a folder of MODEL.yaml files")
    return parse_space(load_yaml(path), str(path), model)
