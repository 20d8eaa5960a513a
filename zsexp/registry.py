"""MLflow side of the final selection (runs, report artifacts, the registered winner) and ``zsexp promote``.

The registered version records how it was chosen: ``zsexp.val_objective_mean`` / ``_std`` over
``zsexp.n_seeds`` seeds (the decision), ``zsexp.seed_rule`` (which seed's model it is), and the
configuration's ``zsexp.test_objective_mean`` / ``_std`` (measured once, for the report).
``promote`` never chooses by test: it moves an alias to the version it is given (default
``@candidate``, chosen on validation) and only *refuses a regression*, i.e. a version whose
recorded test mean is worse than the current holder's.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from zsexp.errors import ZsexpError
from zsexp.faults import kill_point
from zsexp.meta import SweepMeta
from zsexp.models import get_spec
from zsexp.names import check_alias, check_name, filter_value
from zsexp.protocol import PROTOCOL, SEED_RULE, Decision
from zsexp.tags import (
    TAG_BASELINE,
    TAG_FINGERPRINT,
    TAG_KIND,
    TAG_PAIR,
    TAG_SELECTION,
    TAG_SWEEP,
    V_MODE,
    V_N_SEEDS,
    V_OBJECTIVE,
    V_SEED,
    V_SEED_RULE,
    V_SWEEP,
    V_TEST_MEAN,
    V_TEST_MODE,
    V_TEST_NAME,
    V_TEST_STD,
    V_TEST_VALUE,
    V_VAL_MEAN,
    V_VAL_STD,
)


def log_selection(o, meta: SweepMeta, d: Decision, results: list[dict[str, Any]], sel_dir: Path,
                  data) -> dict[str, Any]:
    """The selection in MLflow: one selection run with a nested run per (candidate, seed, phase), its
    summary metrics and report; the winner's registered version with how it was chosen.  Idempotent:
    a re-run finds its runs and version by their tags and adds nothing."""
    from zsexp.tracking import client

    c = client(meta.tracking_uri)
    sel_name = f"{meta.name}-selection-k{o.k}-s{o.seeds}"
    tags = {TAG_SWEEP: meta.name, TAG_KIND: "selection", TAG_SELECTION: sel_name, "zsexp.k": str(o.k),
            "zsexp.seeds": str(o.seeds), TAG_FINGERPRINT: meta.fingerprint, "zsexp.protocol": PROTOCOL}
    found = c.search_runs([meta.experiment_id], filter_string=f"tags.`{TAG_SELECTION}` = {filter_value(sel_name)} "
                                                                f"and tags.`{TAG_KIND}` = 'selection'", max_results=1)
    parent = found[0].info.run_id if found else c.create_run(meta.experiment_id, tags=tags,
                                                             run_name=sel_name).info.run_id
    c.update_run(parent, status="RUNNING")
    ts = int(dt.datetime.now().timestamp() * 1000)
    child_ids = {r_pair(r): _selection_run(c, meta.experiment_id, sel_name, tags, parent, r, ts) for r in results}
    _log_summary(c, parent, d, sel_dir, ts)
    register_as = o.register_as or f"zsexp-{meta.model}-{meta.dataset_name}"
    version = _register_winner(c, o, meta, d, data, register_as, child_ids, parent)
    c.set_terminated(parent)
    return {"selection_run": parent, "registered_model": register_as, "version": version,
            "model_uri": f"models:/{register_as}@candidate"}


def r_pair(r: dict[str, Any]) -> str:
    return f"c{r['candidate']}-s{r['seed']}-{r['phase']}"


def _selection_run(c, exp_id: str, sel_name: str, tags: dict[str, str], parent: str, r: dict[str, Any],
                   ts: int) -> str:
    """The nested run of one (candidate, seed, phase): found by its tag, else created, logged and closed."""
    from mlflow.entities import Metric, Param

    from zsexp.tracking import safe_name

    pair = r_pair(r)
    hit = c.search_runs([exp_id], filter_string=f"tags.`{TAG_SELECTION}` = {filter_value(sel_name)} and "
                                                f"tags.`{TAG_PAIR}` = {filter_value(pair)}", max_results=1)
    if hit:
        return hit[0].info.run_id
    run = c.create_run(exp_id, run_name=f"{sel_name}-{pair}", tags={
        **tags, TAG_KIND: "selection-run", "mlflow.parentRunId": parent, TAG_PAIR: pair,
        "zsexp.candidate": str(r["candidate"]), V_SEED: str(r["seed"]), "zsexp.phase": r["phase"],
        "zsexp.fit_split": r["fit"]})
    from zsexp.config import flat_params

    params = flat_params(r["config"])
    params["rounds"] = str(r["rounds"])
    prefix = "val_" if r["phase"] == "val" else "test_"
    c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                metrics=[Metric(f"{prefix}{safe_name(k)}", v, ts, 0) for k, v in r["metrics"].items()])
    c.set_terminated(run.info.run_id)
    return run.info.run_id


def _log_summary(c, parent: str, d: Decision, sel_dir: Path, ts: int) -> None:
    """Per-candidate means, the paired tests, the baseline and chance on the same test split, the report."""
    from mlflow.entities import Metric

    from zsexp.tracking import safe_name

    obj = d.objective
    metrics = []
    for s in d.summary:
        metrics.append(Metric(f"c{s['candidate']}_val_{safe_name(obj)}_mean", s["val"]["mean"], ts, 0))
        for m, st in s["stats"].items():
            metrics.append(Metric(f"c{s['candidate']}_test_{safe_name(m)}_mean", st["mean"], ts, 0))
    if d.test:
        metrics.append(Metric("wilcoxon_p_value", d.test["p_value"], ts, 0))
    b = d.baseline
    if b:          # the task's baseline and chance on the same test split, beside the candidates
        metrics += [Metric(f"baseline_test_{safe_name(m)}", v, ts, 0) for m, v in b["metrics"].items()]
        metrics += [Metric(f"chance_test_{safe_name(m)}", v, ts, 0) for m, v in b["chance"].items()]
        metrics.append(Metric("winner_vs_baseline_wilcoxon_p_value", b["test"]["p_value"], ts, 0))
        c.set_tag(parent, TAG_BASELINE, f"{b['model']} lam={b['lam']:g}")
    c.log_batch(parent, metrics=metrics)
    for name in ("report.html", "report.md", "candidates.png", "history.png", "importance.png", "candidates.json"):
        if (sel_dir / name).is_file():
            c.log_artifact(parent, str(sel_dir / name), artifact_path="report")


def _register_winner(c, o, meta: SweepMeta, d: Decision, data, register_as: str,
                     child_ids: dict[str, str], parent: str) -> str:
    """The winner's typical-seed final model as a pyfunc retrieval model, registered (once) as @candidate,
    its version tagged with how it was chosen (validation) and what it measured (test)."""
    import mlflow

    from zsexp.serving import log_retrieval_model
    from zsexp.tracking import safe_name

    reg = d.registered_run
    w = d.summary[d.winner]
    winner_run = child_ids[f"c{reg['candidate']}-s{reg['seed']}-test"]
    existing = [v for v in c.search_model_versions(f"name = {filter_value(register_as)}") if v.run_id == winner_run]
    if existing:               # a re-run of a finished selection registers nothing new
        mv = existing[0]
    else:
        example = _input_example(meta.model, data, reg["config"])
        with mlflow.start_run(run_id=winner_run):
            info = log_retrieval_model(reg["model_path"], example, k=o.retrieval_k,
                                       query_kind=get_spec(meta.model).query_kind)
        kill_point("select_register")
        mv = mlflow.register_model(info.model_uri, register_as)
    tobj = d.test_objective
    tst = w["stats"][tobj]
    version_tags = {V_SWEEP: meta.name, V_OBJECTIVE: d.objective, V_MODE: d.mode,
                    V_VAL_MEAN: str(w["val"]["mean"]), V_VAL_STD: str(w["val"]["std"]),
                    V_N_SEEDS: str(w["val"]["n"]), V_SEED: str(reg["seed"]), V_SEED_RULE: SEED_RULE,
                    V_TEST_NAME: tobj, V_TEST_MODE: d.test_mode,
                    V_TEST_MEAN: str(tst["mean"]), V_TEST_STD: str(tst["std"]),
                    V_TEST_VALUE: str(reg["metrics"][tobj]),
                    "zsexp.candidate_config": json.dumps(w["params"], default=str),
                    "zsexp.budget_rounds": str(w["budget_rounds"]), "zsexp.selection_run": parent}
    version_tags.update({f"test.{safe_name(k)}": str(v) for k, v in reg["metrics"].items()})
    for k, v in version_tags.items():
        c.set_model_version_tag(register_as, mv.version, k, v)
    c.set_registered_model_alias(register_as, "candidate", mv.version)
    return str(mv.version)


def _input_example(model: str, data, config: dict[str, Any]) -> dict[str, np.ndarray]:
    test_cls = data.test_classes[:2]
    imgs = data.images("test")[:5]
    gallery = data.features
    if get_spec(model).gallery == "conse":           # CM-GAN's image side is CONSE's representation (eq. 1)
        from zsexp.data import conse_image_representations

        gallery = conse_image_representations(data, data.classes("trainval"), int(config["conse_k"]))
    return {"queries": data.class_embeddings[test_cls].astype(np.float32), "gallery": gallery[imgs].astype(np.float32)}


# --------------------------------------------------------------------------- promote
def _test_mean(mv) -> tuple[float, str]:
    """The version's recorded test mean over seeds (older versions: their single test value)."""
    tags = mv.tags
    if V_TEST_MEAN in tags:
        return float(tags[V_TEST_MEAN]), tags.get(V_TEST_MODE, tags.get(V_MODE, "max"))
    return float(tags.get(V_TEST_VALUE, "nan")), tags.get(V_MODE, "max")


def promote(name: str, version: str | None = None, alias: str = "champion", force: bool = False,
            tracking_uri: str | None = None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    from zsexp.tracking import client

    check_name(name, "registered model name")
    check_alias(alias)
    if version is not None and not (version.isdigit() and int(version) > 0):
        raise ZsexpError(f"--version must be a positive whole number, got {version!r}")
    c = client(tracking_uri, create=False)
    _require_model(c, name)
    from zsexp.paths import default_tracking_uri
    from zsexp.tracking import check_tracking_uri

    check_tracking_uri(tracking_uri or default_tracking_uri(), writes=True)     # moving an alias writes
    try:
        mv = c.get_model_version(name, version) if version else c.get_model_version_by_alias(name, "candidate")
    except MlflowException as exc:
        raise ZsexpError(f"model {name!r}: no version {version or '@candidate'} ({str(exc).splitlines()[0]})") from None
    try:
        current = c.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None and current.version == mv.version:
        print(f"{name} version {mv.version} already holds @{alias}")
        return {"version": mv.version, "previous": current.version, "changed": False}
    tname = mv.tags.get(V_TEST_NAME, mv.tags.get(V_OBJECTIVE))
    new_val, mode = _test_mean(mv)
    if current is not None and not force:
        old_val, _ = _test_mean(current)
        worse = new_val < old_val if mode == "max" else new_val > old_val
        if worse or math.isnan(new_val):
            raise ZsexpError(f"refusing to move @{alias} of {name}: version {mv.version} was chosen on validation, "
                             f"but its configuration's recorded test {tname} mean {new_val:.3f} is worse than the "
                             f"current @{alias} version {current.version} ({old_val:.3f}, {mode} is better); the "
                             f"test mean only guards against a regression; pass --force to promote anyway")
    c.set_registered_model_alias(name, alias, mv.version)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    c.set_model_version_tag(name, mv.version, f"zsexp.previous_{alias}", current.version if current else "none")
    c.set_model_version_tag(name, mv.version, f"zsexp.promoted_{alias}_at", now)
    val = mv.tags.get(V_VAL_MEAN)
    chosen = (f"chosen on validation {mv.tags.get('zsexp.objective')} {float(val):.3f} over "
              f"{mv.tags.get('zsexp.n_seeds')} seeds; " if val else "")
    print(f"{name}: version {mv.version} is now @{alias} ({chosen}test {tname} mean {new_val:.3f}, used only to "
          f"refuse a regression); previous holder: {current.version if current else 'none'}")
    return {"version": mv.version, "previous": current.version if current else None, "changed": True}


def _require_model(c, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        c.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in c.search_registered_models(max_results=100))
        raise ZsexpError(f"no registered model {name!r} in {c.tracking_uri} (known: {', '.join(known) or 'none'})"
                         ) from None


def list_versions(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    from zsexp.tracking import client

    check_name(name, "registered model name")
    c = client(tracking_uri, create=False)
    _require_model(c, name)
    rows = []
    for found in sorted(c.search_model_versions(f"name = {filter_value(name)}"), key=lambda v: int(v.version)):
        mv = c.get_model_version(name, found.version)          # search results carry no aliases
        rows.append({"version": mv.version, "aliases": list(mv.aliases), "objective": mv.tags.get(V_OBJECTIVE),
                     "val_objective_mean": mv.tags.get(V_VAL_MEAN),
                     "test_objective": mv.tags.get(V_TEST_MEAN,
                                                   mv.tags.get(V_TEST_VALUE)),
                     "sweep": mv.tags.get(TAG_SWEEP)})
    return rows
