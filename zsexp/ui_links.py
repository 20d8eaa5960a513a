"""Links into the installed MLflow UI that open a sweep's trials, built from what that UI accepts.

What MLflow 3.x's UI reads (its router and URL-state code, ``mlflow/server/js``):

* ``#/experiments/<id>/runs?viewStateShareKey=<key>`` loads a *shared view* stored as the experiment
  tag ``mlflow.sharedViewState.<key>``: a JSON of the runs page's search facets (``searchFilter``,
  ``orderByKey``, ``orderByAsc``, ...) and UI state (``selectedColumns``, ``runsPinned``, ...) --
  the same mechanism as the UI's own "Share" button.  Columns are keyed ``metrics.`name``` and
  ``params.`name```.
* ``workflowType=machine_learning`` in the query opens the model-training side of the UI rather
  than the GenAI one.  Experiments zsexp creates also carry ``mlflow.experimentKind =
  custom_model_development`` (:data:`EXPERIMENT_KIND`), the experiment-kind tag of MLflow 3; but
  the 3.17 UI lets its global GenAI / Model-training switch (the ``workflowType`` URL parameter, else
  the browser's saved choice, GenAI by default) decide the landing page, so a bare experiment URL can
  still open on the GenAI overview (measured in ``tests/test_ui_browser.py``).  Every link zsexp
  prints therefore carries ``workflowType=machine_learning``.
* ``#/compare-runs?runs=[...]&experiments=[...]`` is the compare view of the given runs, whose
  visualisations include the parallel-coordinates plot over their params and metrics.
* ``#/models/<name>`` is a registered model's page, with its versions and aliases.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote

from zsexp.meta import SweepMeta
from zsexp.tags import SHARED_VIEW_PREFIX, TAG_KIND, TAG_SWEEP

DEFAULT_UI = "http://127.0.0.1:5000"


TAG_PARETO = "zsexp.pareto"          # a multi-objective sweep's trials on its Pareto front (zsexp.search.pareto)


def sweep_filter(sweep: str) -> str:
    """The MLflow search filter of a sweep's trial (child) runs."""
    from zsexp.names import filter_value

    return f"tags.`{TAG_SWEEP}` = {filter_value(sweep)} and tags.`{TAG_KIND}` = 'trial'"


def sweep_view_state(sweep: str, metric_key: str, mode: str, params: list[str],
                     others: tuple[str, ...] = ()) -> dict[str, Any]:
    """The runs page as a user comparing this sweep's trials wants it: only its trials, best first,
    the objective and the searched parameters as columns.  With ``others`` (a multi-objective sweep's
    other objectives) only its Pareto front, every objective a column."""
    where = sweep_filter(sweep) + (f" and tags.`{TAG_PARETO}` = 'true'" if others else "")
    return {"searchFilter": where, "orderByKey": f"metrics.`{metric_key}`",
            "orderByAsc": mode == "min", "lifecycleFilter": "Active",
            "selectedColumns": [f"metrics.`{metric_key}`", f"metrics.`best_{metric_key}`",
                                *[f"metrics.`{k}`" for k in others],
                                *[f"params.`{p}`" for p in params], "tags.`{TAG_OUTCOME}`"],
            "runsPinned": [], "runsExpanded": {}, "runListHidden": False}


def share_key(sweep: str) -> str:
    return "zsexp-" + hashlib.sha1(sweep.encode()).hexdigest()[:12]


def publish_sweep_view(c, experiment_id: str, sweep: str, metric_key: str, mode: str,
                       params: list[str], others: tuple[str, ...] = ()) -> str:
    """Store the sweep's view on its experiment (idempotent); returns the share key."""
    key = share_key(sweep)
    c.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + key,
                         json.dumps(sweep_view_state(sweep, metric_key, mode, params, others)))
    return key


def runs_link(ui: str, experiment_id: str, key: str) -> str:
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}"
            f"&workflowType=machine_learning")


def compare_link(ui: str, experiment_id: str, run_ids: list[str]) -> str:
    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    exps = quote(json.dumps([experiment_id], separators=(",", ":")))
    return f"{ui.rstrip('/')}/#/compare-runs?runs={runs}&experiments={exps}&workflowType=machine_learning"


def model_link(ui: str, name: str) -> str:
    return f"{ui.rstrip('/')}/#/models/{quote(name)}?workflowType=machine_learning"


def sweep_links(meta: SweepMeta, metric_key: str, mode: str, params: list[str],
                ui: str = DEFAULT_UI, others: tuple[str, ...] = ()) -> dict[str, str]:
    """Publish the view and return the two links (runs view, compare view) of a sweep's trials (with
    ``others``, a multi-objective sweep's other objectives: of its Pareto front)."""
    from zsexp.tracking import client, mark_model_training

    c = client(meta.tracking_uri)
    mark_model_training(c, c.get_experiment(meta.experiment_id))
    key = publish_sweep_view(c, meta.experiment_id, meta.name, metric_key, mode, params, others)
    where = sweep_filter(meta.name) + (f" and tags.`{TAG_PARETO}` = 'true'" if others else "")
    runs = c.search_runs([meta.experiment_id], filter_string=where, max_results=500)
    return {"runs": runs_link(ui, meta.experiment_id, key),
            "compare": compare_link(ui, meta.experiment_id, [r.info.run_id for r in runs])}


def run_link(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def experiment_link(ui: str, experiment_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def print_links(name: str, links: dict[str, str]) -> None:
    print(f"[{name}] compare the trials in the MLflow UI (start it with `zsexp ui {name}`):")
    print(f"    trials:  {links['runs']}")
    print(f"    compare: {links['compare']}  (parallel coordinates over the searched parameters)")
