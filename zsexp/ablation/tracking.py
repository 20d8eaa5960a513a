"""MLflow side of an ablation: one ablation run, a nested run per variant x seed x data split (params,
test metrics, the final model file), the table and its plot as artifacts.

Idempotent: runs are found by their tags before any is created, so a re-run (or a run after a kill
while logging) adds nothing twice and closes what a kill left open.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from zsexp.tags import TAG_ABLATION, TAG_BASELINE, TAG_FINGERPRINT, TAG_KIND, TAG_RUN, V_SEED

ARTIFACTS = ("table.md", "table.html", "table.png", "plan.json")


def log_ablation(plan: Any, name: str, table: dict[str, Any], results: list[dict[str, Any]],
                 out: Path) -> dict[str, Any]:
    from zsexp.names import filter_value
    from zsexp.tracking import client, ensure_experiment, search_all_runs

    c = client(plan.tracking_uri)
    exp_id = ensure_experiment(c, plan.experiment, plan.tracking_uri)
    tags = {TAG_ABLATION: name, "zsexp.model": plan.model, "zsexp.dataset": plan.dataset_name,
            "zsexp.base": plan.base[:5000]}
    found = c.search_runs([exp_id], filter_string=f"tags.`{TAG_ABLATION}` = {filter_value(name)} and "
                                                  f"tags.`{TAG_KIND}` = 'ablation'", max_results=1)
    parent = found[0].info.run_id if found else c.create_run(exp_id, run_name=name,
                                                             tags={**tags, TAG_KIND: "ablation"}).info.run_id
    c.update_run(parent, status="RUNNING")
    ts = int(dt.datetime.now().timestamp() * 1000)
    known = {r.data.tags.get(TAG_RUN): r for r in search_all_runs(
        c, exp_id, f"tags.`{TAG_ABLATION}` = {filter_value(name)} and tags.`{TAG_KIND}` = 'ablation-run'")}
    for r in results:
        _nested_run(c, exp_id, name, tags, parent, r, known.get(r["stem"]), ts)
    _log_summary(c, parent, plan, table, out, ts)
    c.set_terminated(parent)
    return {"mlflow_run": parent, "experiment": plan.experiment, "experiment_id": exp_id}


def _nested_run(c, exp_id: str, name: str, tags: dict[str, str], parent: str, r: dict[str, Any], found: Any,
                ts: int) -> None:
    from mlflow.entities import Metric, Param

    from zsexp.tracking import safe_name

    if found is not None and found.info.status == "FINISHED":
        return
    if found is None:
        run_id = c.create_run(exp_id, run_name=f"{name}-{r['stem']}", tags={
            **tags, TAG_KIND: "ablation-run", "mlflow.parentRunId": parent, TAG_RUN: r["stem"],
            "zsexp.variant": r["variant"], "zsexp.variant_label": r["label"], V_SEED: str(r["seed"]),
            "zsexp.data_seed": str(r["data_seed"]), "zsexp.fit_split": r["fit"]}).info.run_id
    else:
        run_id = found.info.run_id
    from zsexp.config import flat_params

    params = flat_params(r["config"])
    params.update(rounds=str(r["rounds"]), data_seed=str(r["data_seed"]))
    have = found.data.params if found is not None else {}
    c.log_batch(run_id, params=[Param(k, v) for k, v in params.items() if k not in have],
                metrics=[Metric(f"test_{safe_name(k)}", float(v), ts, 0) for k, v in r["metrics"].items()])
    if Path(r["model_path"]).is_file():
        c.log_artifact(run_id, r["model_path"], artifact_path="checkpoint")
    c.set_terminated(run_id)


def _log_summary(c, parent: str, plan: Any, t: dict[str, Any], out: Path, ts: int) -> None:
    """Per-row means and p-values against the complete model, the baseline and chance on the same splits,
    the table's files."""
    from mlflow.entities import Metric, Param

    from zsexp.tracking import safe_name

    metrics = []
    for row in t["rows"]:
        slug = row["slug"]
        for m, st in row["cells"].items():
            metrics.append(Metric(f"{slug}_test_{safe_name(m)}_mean", st["mean"], ts, 0))
        test = row["vs_complete"]
        if test and test.get("p_value") is not None:
            metrics.append(Metric(f"{slug}_vs_complete_p_value", test["p_value"], ts, 0))
    b = t["baseline"]
    if b:
        metrics += [Metric(f"baseline_test_{safe_name(m)}_mean", st["mean"], ts, 0) for m, st in b["cells"].items()]
        if b["vs_complete"]:
            metrics.append(Metric("baseline_vs_complete_p_value", b["vs_complete"]["p_value"], ts, 0))
        c.set_tag(parent, TAG_BASELINE, f"{b['model']} lam={'/'.join(f'{x:g}' for x in b['lam'])}")
    metrics += [Metric(f"chance_test_{safe_name(m)}", v, ts, 0) for m, v in t["chance"].items()]
    have = c.get_run(parent).data.params
    params = {"model": plan.model, "dataset": plan.dataset, "budget": str(t["budget"] or "full")}   # the identity
    c.log_batch(parent, metrics=metrics, params=[Param(k, v) for k, v in params.items() if k not in have])
    # what a re-run may extend (more seeds, splits or rows) is a tag, which can change
    for key, value in (("zsexp.seeds", str(t["seeds"])), ("zsexp.data_seeds", ",".join(map(str, t["data_seeds"]))),
                       ("zsexp.rows", ",".join(r["key"] for r in t["rows"])[:5000])):
        c.set_tag(parent, key, value)
    c.set_tag(parent, TAG_FINGERPRINT, ",".join(sorted({data.fingerprint() for data in plan.datas.values()})))
    for fname in ARTIFACTS:
        if (out / fname).is_file():
            c.log_artifact(parent, str(out / fname), artifact_path="table")
