"""``zsexp search MODEL --warm-start SWEEP``: a new sweep whose sampler starts from an earlier sweep's trials.

Every *completed* trial of the earlier sweep's Optuna study (read from its journal: JSON, nothing
unpickled) is a candidate.  Its full configuration is rebuilt as the earlier sweep trained it (its
fixed keys, then its sampled params, over the model's and the dataset's defaults); it is taken when
the new space can express exactly that configuration: every searched key of the new space has the
trial's value inside the new distribution, and the configuration the new sweep would train from
those values is the one the trial trained (a key fixed differently, or left to a default the trial did
not have, is a reason to skip it).  A taken trial is given to the new study with Optuna's
``create_trial`` under the *new* distributions and its recorded objective (the best-round validation
value the earlier study was told), and the user attribute ``zsexp_warm_from``: the sampler sees it as
history, Tune never runs it, and it does not count toward ``--trials`` (``optuna_search.counts``).

Refused in one line: a different model, dataset fingerprint (arrays, names and splits), objective
(metric or mode) or round budget (``max_rounds``: the best-round value depends on it), an earlier sweep
without completed trials or with none that fits the new space, and a grid sampler in the new sweep (a
grid visits each point once, whatever the history).  Choices: trials the earlier study failed or pruned
are not given (their values are not objective values); a taken trial that the earlier sweep itself
took from a third sweep keeps the name of the sweep it came from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from zsexp.compat import optuna as ot_compat
from zsexp.errors import ZsexpError
from zsexp.meta import SweepMeta
from zsexp.search.space import SearchSpace, parse_space

SOURCE_TRIAL_ATTR = "zsexp_warm_trial"     # the earlier sweep's Tune trial id (or Optuna number)


@dataclass
class WarmPlan:
    source: str
    taken: list[dict[str, Any]] = field(default_factory=list)      # params, value, origin, trial
    skipped: list[dict[str, str]] = field(default_factory=list)    # trial, reason

    def summary(self) -> dict[str, Any]:
        return {"sweep": self.source, "taken": len(self.taken), "skipped": len(self.skipped)}

    def report(self) -> str:
        return json.dumps({"source": self.source, "taken": self.taken, "skipped": self.skipped}, indent=2,
                          default=str)


def _value_of(cfg: Any, key: str) -> Any:
    if "[" in key:
        name, i = key[:-1].split("[")
        seq = getattr(cfg, name)
        return seq[int(i)] if int(i) < len(seq) else None
    return getattr(cfg, key)


def _differences(a: Any, b: Any) -> list[str]:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return [f"{k}={da.get(k)!r} there, {db.get(k)!r} here" for k in sorted(set(da) | set(db)) if da.get(k) != db.get(k)]


def plan(source: SweepMeta, model: str, data: Any, space: SearchSpace, trial_meta: dict[str, Any]) -> WarmPlan:
    """Which of ``source``'s trials the new sweep (``space``, ``trial_meta``) takes, and why not the others.
    Every refusal is raised before anything of the new sweep exists."""
    from zsexp.search.optuna_search import LOST_ATTR, TUNE_ID_ATTR, WARM_ATTR

    where = f"--warm-start {source.name}"
    study = _source_study(source, model, data, space, where)
    dists = space.distributions()
    out = WarmPlan(source.name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        tid = str(t.user_attrs.get(SOURCE_TRIAL_ATTR) or t.user_attrs.get(TUNE_ID_ATTR) or f"optuna#{t.number}")
        if t.user_attrs.get(LOST_ATTR) or not t.values:
            continue
        params, reason = _fit_here(source, data, dict(t.params), dists, trial_meta)
        if reason:
            out.skipped.append({"trial": tid, "reason": reason})
            continue
        out.taken.append({"trial": tid, "params": params, "values": [float(v) for v in t.values],
                          "origin": str(t.user_attrs.get(WARM_ATTR) or source.name)})
    if not out.taken and not out.skipped:
        raise ZsexpError(f"{where}: that sweep has no completed trial to start from")
    if not out.taken:
        raise ZsexpError(f"{where}: none of its {len(out.skipped)} completed trials fits this space (the first: "
                         f"{out.skipped[0]['reason'][:200]}); widen the space or start without --warm-start")
    return out


def _source_study(source: SweepMeta, model: str, data: Any, space: SearchSpace, where: str) -> optuna.Study:
    """The earlier sweep's study, once it is known to have measured the same objective on the same data
    with the same budget (else one line saying which differs)."""
    from zsexp.search.optuna_search import journal_storage
    from zsexp.search.storage import own_regular_file

    if source.model != model:
        raise ZsexpError(f"{where}: that sweep tuned {source.model}, not {model}; warm starting needs the same model")
    if source.fingerprint != data.fingerprint():
        raise ZsexpError(f"{where}: its dataset fingerprint {source.fingerprint or '(none)'} is not this dataset's "
                         f"{data.fingerprint()} ({data.name}); its values were measured on other data or splits")
    src_space = parse_space(source.space, source.space_source, source.model)
    if (src_space.metric_keys, src_space.modes) != (space.metric_keys, space.modes):
        def shown(sp: SearchSpace) -> str:
            return ", ".join(f"{k} ({m})" for k, m in zip(sp.metric_keys, sp.modes, strict=True))

        raise ZsexpError(f"{where}: its objectives are {shown(src_space)}, this sweep's are {shown(space)}; its values "
                         f"are not values of these objectives")
    if src_space.max_rounds != space.max_rounds:
        raise ZsexpError(f"{where}: its trials ran up to {src_space.max_rounds} rounds, this sweep's run up to "
                         f"{space.max_rounds}; a best-round value depends on the budget")
    if space.sampler == "grid":
        raise ZsexpError(f"{where}: this sweep's sampler is grid, which visits every point once whatever the history; "
                         f"warm starting gives it nothing (use tpe, gp, cmaes or qmc)")
    if own_regular_file(Path(source.dir), "optuna_journal.log") is None:
        raise ZsexpError(f"{where}: it has no Optuna journal ({Path(source.dir) / 'optuna_journal.log'})")
    try:
        return optuna.load_study(study_name=source.name, storage=journal_storage(source.dir))
    except KeyError:
        raise ZsexpError(f"{where}: its Optuna journal holds no study {source.name!r}") from None


def _fit_here(source: SweepMeta, data: Any, src_params: dict[str, Any], dists: dict[str, Any],
              trial_meta: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """An earlier trial's values in this space, or the reason it does not fit: a value outside the space, or
    a configuration this space would not train the same way."""
    from zsexp.search.trainable import config_for

    try:
        src_cfg = config_for(source.trial_meta, data, src_params)
    except ZsexpError as exc:
        return {}, f"its configuration is not valid here ({exc})"
    params = {}
    for key, dist in dists.items():
        v = _value_of(src_cfg, key)
        if v is None or not ot_compat.distribution_contains(dist, v):
            return {}, f"{key}={v!r} is outside this space's {key}"
        params[key] = v
    try:
        diff = _differences(src_cfg, config_for(trial_meta, data, params))
    except ZsexpError as exc:
        diff = [str(exc)]
    if diff:
        return {}, "this space would train another configuration: " + "; ".join(diff[:3])
    return params, None


def apply(plan_: WarmPlan, sweep_dir: Path, study_name: str, space: SearchSpace) -> int:
    """Give the taken trials to the new sweep's study (created here, in its journal); a trial given by an
    earlier attempt of the same start (killed before the sweep file was written) is not given twice."""
    from zsexp.search.optuna_search import WARM_ATTR, journal_storage

    study = optuna.create_study(study_name=study_name, storage=journal_storage(sweep_dir), load_if_exists=True,
                                directions=["maximize" if m == "max" else "minimize" for m in space.modes])
    there = {(t.user_attrs.get(WARM_ATTR), t.user_attrs.get(SOURCE_TRIAL_ATTR))
             for t in study.get_trials(deepcopy=False)}
    dists = space.distributions()
    added = 0
    for t in plan_.taken:
        if (t["origin"], t["trial"]) in there:
            continue
        study.add_trial(optuna.trial.create_trial(
            params=t["params"], distributions={k: dists[k] for k in t["params"]},
            values=t["values"] if "values" in t else [t["value"]],
            user_attrs={WARM_ATTR: t["origin"], SOURCE_TRIAL_ATTR: t["trial"]}))
        added += 1
    return added
