"""The ablation job: plan, Ray runs, statistics, report, MLflow.

Protocol.  The base configuration is the model's defaults for the dataset (with ``--config`` /
``--set``), or a sweep's winner (``--from SWEEP``: the winner of the sweep's latest final selection,
else its top-ranked configuration, with the round budget it was chosen at).  Every variant x seed x
data split is one Ray trial: fitted on the train + val classes for that budget, the last round is the
model, evaluated once on the unseen test classes.  No decision is taken, so nothing looks at test to
choose.  With ``--from``, only the sweep's own data split is allowed: the sweep chose its
configuration on that split's validation classes, and on another split of the same classes those
could be test classes.

Resumable: each run writes its result file when it finishes and a checkpoint after every round;
running the same command again skips finished runs and continues the others.  The job's identity
(model, dataset, base configuration, budget) is kept in ``plan.json``; a re-run under the same name
with another identity is refused.  More seeds, splits or variants under the same identity only add
runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ray import tune

from zsexp.ablation.options import AblateOptions
from zsexp.ablation.plan import Plan, make_plan
from zsexp.ablation.variants import Variant, reference_index
from zsexp.errors import ZsexpError
from zsexp.fitting import GridProgress
from zsexp.workcopy import describe

PLAN_FILE, RESULT_FILE = "plan.json", "ablation.json"


def run_stem(v: Variant, seed: int, data_seed: int) -> str:
    return f"{v.slug}.s{seed}.d{data_seed}"


def ablation_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """One variant x seed x data split: fit on train + val for the budget, evaluate the test classes once."""
    from zsexp.fitting import fit_and_evaluate, write_result
    from zsexp.models.common import DivergenceError
    from zsexp.search.cluster import trial_threads

    trial_threads()
    run = job["runs"][config["pair"]]
    out = job["dir"]           # a folder, or an object-store URI (zsexp.fitting.RunFolder)
    tmeta = dict(job["tmeta"], data_seed=run["data_seed"])
    try:
        result = fit_and_evaluate(tmeta, job["flat"], run["seed"], "trainval", job["budget"], out, run["stem"],
                                  split="test", variant=run["overrides"])
    except DivergenceError as exc:      # a finding of the row, reported in the table; retrying would diverge again
        result = {"seed": run["seed"], "fit": "trainval", "rounds": 0, "config": {}, "metrics": {}, "per": {},
                  "diverged": str(exc)[:500]}
    write_result(out, run["stem"], {"variant": run["key"], "data_seed": run["data_seed"], **result})
    tune.report({"round": result["rounds"], "finished": True})


class AblationProgress(GridProgress):
    """One line per finished run (variant, seed, split, its test objective)."""

    def __init__(self, name: str, runs: list[dict[str, Any]], n: int, out: Path, objective: str):
        super().__init__(f"ablate {name}", n, out, objective)
        self.runs = runs

    def describe(self, index: int) -> str:
        run = self.runs[index]
        return f"{run['label']} seed {run['seed']} split {run['data_seed']}: "

    def stem(self, index: int) -> str:
        return self.runs[index]["stem"]

    def outcome(self, result: dict[str, Any]) -> str:
        if result.get("diverged"):
            return f"DIVERGED ({result['diverged'][:120]})"
        return f"test {self.objective} {result['metrics'][self.objective]:.2f}"

    def on_trial_complete(self, iteration, trials, trial, **info):
        from zsexp.faults import kill_point

        super().on_trial_complete(iteration, trials, trial, **info)
        kill_point("ablate_run")


# --------------------------------------------------------------------------- plan
def ablations_root(storage: str | None) -> Path:
    from zsexp.search.storage import default_storage, storage_root

    return storage_root(storage, default_storage("ablations"))


def ablation_dir(root: Path, name: str) -> Path:
    from zsexp.search.storage import named_dir

    return named_dir(root, name, "ablation name", "ablations")


def data_label(names: list[str]) -> str:
    """What the table calls the data: the name, and how many splits when there are several (names that
    number their split, like the UCI digits' ``...-split0``, lose the number)."""
    import os

    if len(set(names)) == 1:
        return names[0] + (f", {len(names)} data splits" if len(names) > 1 else "")
    prefix = os.path.commonprefix(names).rstrip("-_")
    if prefix.endswith("split"):
        prefix = prefix[: -len("split")].rstrip("-_")
    return f"{prefix or names[0]}, {len(names)} data splits"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("._-")[:60] or "data"


def default_name(o: AblateOptions, plan: Plan) -> str:
    """``MODEL-DATA-ablation[-from-SWEEP]``; DATA is a built-in name or the data path's last part (not one
    split's name: the job may span several)."""
    data = plan.dataset if "/" not in plan.dataset else Path(plan.dataset.rpartition(":")[0] or plan.dataset).name
    if ":" in plan.dataset and "/" in plan.dataset:
        data += "-" + plan.dataset.rpartition(":")[2]
    return f"{o.model}-{_safe(data)}-ablation" + (f"-from-{o.source}" if o.source else "")


def _check_identity(out: Path, plan: Plan, fingerprints: dict[int, str]) -> None:
    """A new job writes its identity; a re-run must match it (same model, data, base configuration, budget),
    and each data split it shares with the first run must still have the same content."""
    from zsexp.search.storage import write_json_atomic

    path = out / PLAN_FILE
    ident = json.loads(json.dumps(plan.identity(), default=str))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            old_ident, old_fp = old["identity"], {int(k): v for k, v in old["fingerprints"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ZsexpError(f"{path}: unreadable ablation plan; move the folder away or choose another --name"
                             ) from None
        diff = sorted(k for k in set(ident) | set(old_ident) if ident.get(k) != old_ident.get(k))
        if diff:
            raise ZsexpError(f"ablation {out.name!r} was made with another {', '.join(diff)} "
                             f"({'; '.join(f'{k}: {old_ident.get(k)!r}' for k in diff)}); choose another --name")
        changed = sorted(d for d, fp in fingerprints.items() if d in old_fp and old_fp[d] != fp)
        if changed:
            raise ZsexpError(f"ablation {out.name!r}: the data of split(s) {changed} changed since its runs were "
                             f"made (fingerprint); choose another --name")
        fingerprints = {**old_fp, **fingerprints}
    write_json_atomic(path, {"identity": ident, "fingerprints": fingerprints}, indent=2)


# --------------------------------------------------------------------------- the job
def run_ablation(o: AblateOptions) -> dict[str, Any]:
    from zsexp.search.lock import SweepLock
    from zsexp.search.storage import check_writable_root
    from zsexp.tracking import check_tracking_uri, credentials_from_uri

    plan = make_plan(o)
    plan.tracking_uri = credentials_from_uri(plan.tracking_uri)
    check_tracking_uri(plan.tracking_uri)
    root = ablations_root(o.storage)
    name = o.name or default_name(o, plan)
    out = ablation_dir(root, name)
    check_writable_root(root)
    with SweepLock(root, name, "ablate", kind="ablation"):
        out.mkdir(parents=True, exist_ok=True)
        plan.dataset_name = data_label([data.name for data in plan.datas.values()])
        _check_identity(out, plan, {d: data.fingerprint() for d, data in plan.datas.items()})
        runs = [{"key": v.key, "label": v.label, "overrides": v.overrides, "seed": s, "data_seed": d,
                 "stem": run_stem(v, s, d)}
                for d in plan.data_seeds for v in plan.variants for s in range(o.seeds)]
        missing = [i for i, r in enumerate(runs) if not (out / f"{r['stem']}.json").is_file()]
        print(f"[ablate {name}] {plan.model} on {plan.dataset_name}: {len(plan.variants)} rows x {o.seeds} seeds x "
              f"{len(plan.data_seeds)} data split(s), each fitted on train + val "
              f"({'budget ' + str(plan.budget) + ' rounds' if plan.budget else 'full training'}) and evaluated once "
              f"on test; base: {plan.base}; {len(runs) - len(missing)} of {len(runs)} runs already finished",
              flush=True)
        if missing:
            from zsexp.fitting import run_grid
            from zsexp.models import get_spec

            job = {"dir": str(out), "runs": runs, "tmeta": plan.tmeta, "flat": plan.flat, "budget": plan.budget}
            progress = AblationProgress(name, runs, len(missing), out, get_spec(plan.model).objective)
            run_grid(ablation_trial, job, missing, plan.options, out, progress, o.address,
                     again="run the same `zsexp ablate` command again")
        results = [read_run(out, r) for r in runs]
        return finish(o, plan, name, out, results)


def read_run(out: Path, run: dict[str, Any]) -> dict[str, Any]:
    """A finished run's result file, checked; its model file is where this job writes it, never a path read
    back from the file."""
    path = out / f"{run['stem']}.json"
    try:
        res = json.loads(path.read_text())
        if not isinstance(res, dict) or not all(isinstance(res.get(k), dict) for k in ("metrics", "per")):
            raise ValueError("not a result record")
        if res.get("variant") != run["key"] or res.get("seed") != run["seed"] or \
                res.get("data_seed") != run["data_seed"]:
            raise ValueError(f"it describes another run ({res.get('variant')}, seed {res.get('seed')}, split "
                             f"{res.get('data_seed')})")
        if not all(isinstance(v, (int, float)) for v in res["metrics"].values()):
            raise ValueError("non-numeric metrics")
    except (OSError, ValueError) as exc:
        raise ZsexpError(f"{path}: unreadable ablation result ({exc}); delete it and run the command again (that "
                         f"run is then trained again)") from None
    res["model_path"] = str(out / f"{run['stem']}.model.pt")
    res["stem"], res["label"] = run["stem"], run["label"]
    return res


def finish(o: AblateOptions, plan: Plan, name: str, out: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    from zsexp.ablation.table import baselines_on, summarise_table, write_table
    from zsexp.ablation.tracking import log_ablation
    from zsexp.search.storage import write_json_atomic
    from zsexp.search.trainable import config_for

    ref = reference_index(plan.model, plan.variants)
    ref_cfg = {d: config_for(dict(plan.tmeta, data_seed=d), data, plan.flat, plan.variants[ref].overrides)
               for d, data in plan.datas.items()}
    baseline = baselines_on(plan.model, plan.datas, ref_cfg)
    table = summarise_table(plan, results, ref, baseline, plan.datas, seeds=o.seeds)
    paths = write_table(table, out)
    table.update(name=name, dir=describe(out), files={k: describe(v) for k, v in paths.items()})
    table.update(log_ablation(plan, name, table, results, out))
    write_json_atomic(out / RESULT_FILE, table, indent=2)
    print((out / "table.md").read_text(), flush=True)
    from zsexp.ui_links import DEFAULT_UI, run_link

    print(f"[ablate {name}] table: {describe(paths['md'])} (HTML: {describe(paths['html'])}); MLflow ablation run "
          f"{table['mlflow_run']} in experiment {plan.experiment!r}, with the table in its artifacts and a nested "
          f"run per model: "
          f"{run_link(DEFAULT_UI, table['experiment_id'], table['mlflow_run'])} (start the UI with `zsexp ui`)",
          flush=True)
    diverged = [r for r in results if r.get("diverged")]
    if len(diverged) == len(results):
        raise ZsexpError(f"every one of the ablation's {len(results)} runs diverged to NaN ({diverged[0]['diverged']}"
                         f"); the table in {paths['md']} records it; lower the learning rates or check the data")
    return table
