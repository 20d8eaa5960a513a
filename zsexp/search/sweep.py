"""``zsexp search`` / ``resume`` / ``status``: a sweep = one Ray Tune experiment + one MLflow parent run.

Layout on Ray's storage (``--storage``, default ``$ZSEXP_HOME/sweeps``)::

    <storage>/<name>/               Tune's experiment directory (trials, checkpoints, searcher state)
    <storage>/<name>/zsexp_sweep.json   what zsexp needs to resume: model, dataset, space, MLflow ids

GPU budget: ``--gpus N`` with ``--gpus-per-trial F`` runs up to ``floor(N / F)`` trials at once.
``ZSEXP_SIMULATE_GPUS=M`` starts the local Ray with M *logical* GPUs, so the scheduling of a GPU
cluster can be checked on a CPU machine (trials still compute on the CPU).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from zsexp.baselines import margin
from zsexp.errors import ZsexpError
from zsexp.faults import kill_point
from zsexp.paths import default_tracking_uri, zsexp_home
from zsexp.search.space import SearchSpace, load_space, parse_space
from zsexp.search.trainable import UPDATES_KEY, train_trial, trial_params

SWEEP_FILE = "zsexp_sweep.json"
CALLBACK_FILE = "zsexp_progress.json"


@dataclass
class SweepOptions:
    model: str
    dataset: str = "synthetic-tiny"
    space: str | None = None
    trials: int = 8
    gpus: float = 0.0
    gpus_per_trial: float = 1.0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    seed: int = 0
    data_seed: int = 0
    name: str | None = None
    storage: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    sets: tuple[str, ...] = ()
    retries: int = 2
    max_failed_trials: int | None = None
    keep_checkpoints: int | None = None
    device: str = "auto"
    progress_every_s: float = 5.0


def default_storage() -> Path:
    return zsexp_home() / "sweeps"


def sweeps_root(storage: str | None) -> Path:
    """The directory holding the sweeps (``--storage``, default ``$ZSEXP_HOME/sweeps``)."""
    base = storage or str(default_storage())
    if "://" in base:
        raise ZsexpError("zsexp keeps sweep metadata beside Tune's: --storage must be a (shared) file system path")
    return Path(base).expanduser().resolve()


def sweep_dir(name: str, storage: str | None) -> Path:
    return sweeps_root(storage) / name


def sweep_names(storage: str | None) -> list[str]:
    """The sweeps under ``storage`` (directories holding a sweep file), sorted by name."""
    return sorted(p.parent.name for p in sweeps_root(storage).glob(f"*/{SWEEP_FILE}"))


def read_meta(name: str, storage: str | None) -> dict[str, Any]:
    path = sweep_dir(name, storage) / SWEEP_FILE
    if not path.is_file():
        known = sweep_names(storage)
        raise ZsexpError(f"no sweep {name!r} under {path.parent.parent} (known: {', '.join(known) or 'none'}); "
                         f"pass --storage if it lives elsewhere")
    return json.loads(path.read_text())


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- Ray
def _init_ray(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; returns True when zsexp started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": True, "logging_level": "ERROR"}
    sim = os.environ.get("ZSEXP_SIMULATE_GPUS")
    if address:
        kwargs["address"] = address
    elif sim:
        kwargs["num_gpus"] = float(sim)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ZsexpError(f"cannot join the Ray cluster at {address}: {exc}") from None
    return True


def _resources(opts: dict[str, Any]) -> tuple[dict[str, float], int]:
    import ray

    cluster = ray.cluster_resources()
    cpu, gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    res = {"cpu": float(opts["cpus_per_trial"])}
    if opts["gpus"] > 0:
        if gpu < opts["gpus"]:
            raise ZsexpError(f"--gpus {opts['gpus']:g} asked, but the Ray cluster has {gpu:g} GPU(s); "
                             f"lower --gpus, add GPU workers, or set ZSEXP_SIMULATE_GPUS to simulate them")
        if not 0 < opts["gpus_per_trial"] <= opts["gpus"]:
            raise ZsexpError(f"--gpus-per-trial must be in (0, --gpus={opts['gpus']:g}], "
                             f"got {opts['gpus_per_trial']:g}")
        res["gpu"] = float(opts["gpus_per_trial"])
        concurrency = int(math.floor(opts["gpus"] / opts["gpus_per_trial"] + 1e-9))
    else:
        per = max(opts["cpus_per_trial"], 1e-3)
        if per > cpu:
            raise ZsexpError(f"--cpus-per-trial {per:g} exceeds the cluster's {cpu:g} CPUs")
        concurrency = max(1, int(math.floor(cpu / per + 1e-9)))
    if opts.get("max_concurrent"):
        concurrency = min(concurrency, int(opts["max_concurrent"]))
    return res, concurrency


# --------------------------------------------------------------------------- Tune objects
def _trainable(meta: dict[str, Any]):
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_trial, meta=meta["trial_meta"]), meta["resources"])


def _callback(meta: dict[str, Any], space: SearchSpace):
    """The MLflow/progress callback of a new sweep (a resumed sweep gets its own back from Tune's state)."""
    from zsexp.search.callback import MlflowSweepCallback
    from zsexp.tracking import Progress

    progress = Progress(meta["name"], space.metric, space.mode, every_s=meta["progress_every_s"])
    return MlflowSweepCallback(
        tracking_uri=meta["tracking_uri"], experiment_id=meta["experiment_id"],
        parent_run_id=meta["parent_run_id"], sweep=meta["name"], metric_key=space.metric_key, mode=space.mode,
        max_rounds=space.max_rounds, params_of=functools.partial(trial_params, meta["trial_meta"]),
        flat_of=dict, progress=progress, common_tags=meta["tags"],
        state_file=str(Path(meta["dir"]) / CALLBACK_FILE))


def _scheduler(space: SearchSpace, name: str):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "asha" and space.unit == "updates":       # rungs at equal optimiser updates
        return ASHAScheduler(time_attr=UPDATES_KEY, max_t=space.max_updates, grace_period=space.grace_updates,
                             reduction_factor=space.reduction_factor)
    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=space.max_rounds, grace_period=space.grace_rounds,
                             reduction_factor=space.reduction_factor)
    return FIFOScheduler()


# --------------------------------------------------------------------------- commands
def run_sweep(o: SweepOptions) -> dict[str, Any]:
    """A new sweep.  Every check that can refuse it (space, budget, data, name, tracking store, Ray
    resources) runs before anything is written: a refused command leaves no sweep directory, no
    MLflow run and no registry entry."""
    import ray

    from zsexp.baselines import sweep_reference
    from zsexp.config import parse_set
    from zsexp.data import load_dataset
    from zsexp.models import require_discriminative_validation
    from zsexp.tracking import client, ensure_experiment, git_commit, redact_uri

    space = load_space(o.space, o.model)
    if o.sets:     # --set pins a key for every trial; a searched key becomes fixed
        pinned = parse_set(list(o.sets))
        raw = dict(space.raw)
        raw["fixed"] = {**(raw.get("fixed") or {}), **pinned}
        raw["params"] = {k: v for k, v in (raw.get("params") or {}).items() if k.split("[")[0] not in pinned}
        space = parse_space(raw, f"{space.source} + --set", o.model)
    if o.sampler:
        space = parse_space({**space.raw, "fixed": space.fixed, "sampler": {"name": o.sampler}}, space.source, o.model)
    scheduler = o.scheduler or space.scheduler
    if scheduler not in ("asha", "none"):
        raise ZsexpError(f"--scheduler must be asha or none, got {scheduler!r}")
    if o.trials < 1:
        raise ZsexpError(f"--trials must be >= 1, got {o.trials}")
    if space.grid_size is not None and o.trials > space.grid_size:
        raise ZsexpError(f"{space.source}: the grid has {space.grid_size} points; --trials {o.trials} would repeat "
                         f"some: pass --trials {space.grid_size} (the whole grid) or fewer (a seeded subset)")
    if o.retries < 0:
        raise ZsexpError(f"--retries must be >= 0, got {o.retries}")
    data = load_dataset(o.dataset, seed=o.data_seed)
    require_discriminative_validation(data)
    name = o.name or f"{o.model}-{data.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    d = sweep_dir(name, o.storage)
    if (d / SWEEP_FILE).exists():
        raise ZsexpError(f"sweep {name!r} already exists at {d}; continue it with `zsexp resume {name}` "
                         f"or choose another --name")
    reference = sweep_reference(o.model, data, space.fixed)      # validation classes only, like the trials
    c = client(o.tracking_uri or default_tracking_uri())
    uri = redact_uri(o.tracking_uri or default_tracking_uri())   # stored and printed without credentials
    opts = {"gpus": o.gpus, "gpus_per_trial": o.gpus_per_trial, "cpus_per_trial": o.cpus_per_trial,
            "max_concurrent": o.max_concurrent}
    started = _init_ray(o.address)
    try:
        resources = _resources(opts)                        # the cluster can run it: only now write anything
        experiment = o.experiment or f"zsexp-{o.model}-{data.name}"
        exp_id = ensure_experiment(c, experiment, uri)
        tags = {"zsexp.model": o.model, "zsexp.dataset": data.name, "zsexp.fingerprint": data.fingerprint(),
                "zsexp.git_commit": git_commit(), "zsexp.storage": str(d)}
        # a start killed before it wrote the sweep file left at most this run behind: take it over
        found = c.search_runs([exp_id], filter_string=f"tags.`zsexp.sweep` = '{name}' and tags.`zsexp.kind` = 'sweep'",
                              max_results=1)
        parent = found[0] if found else c.create_run(exp_id, run_name=name,
                                                     tags={**tags, "zsexp.sweep": name, "zsexp.kind": "sweep"})
        d.mkdir(parents=True, exist_ok=True)
        c.log_text(parent.info.run_id, json.dumps(space.raw, indent=2, default=str), "search_space.json")
        meta = {
            "name": name, "dir": str(d), "model": o.model, "dataset": o.dataset, "dataset_name": data.name,
            "fingerprint": data.fingerprint(), "trials": o.trials, "scheduler": scheduler, "seed": o.seed,
            "space": space.raw | {"fixed": space.fixed}, "space_source": space.source, "tracking_uri": uri,
            "experiment": experiment, "experiment_id": exp_id, "parent_run_id": parent.info.run_id, "tags": tags,
            "options": opts, "retries": o.retries, "max_failed_trials": o.max_failed_trials,
            "keep_checkpoints": o.keep_checkpoints, "reference": reference,
            "progress_every_s": o.progress_every_s, "created": dt.datetime.now().isoformat(), "status": "created",
            "trial_meta": {"model": o.model, "dataset": o.dataset, "data_seed": o.data_seed, "seed": o.seed,
                           "fixed": space.fixed, "fit_split": "train", "max_rounds": space.max_rounds,
                           "device": o.device, "sweep_dir": str(d)},
        }
        from mlflow.entities import Param

        sweep_params = {"model": o.model, "dataset": o.dataset, "trials": o.trials, "scheduler": scheduler,
                        "sampler": space.sampler, "gpus": o.gpus, "gpus_per_trial": o.gpus_per_trial,
                        "objective": space.metric, "mode": space.mode, "max_rounds": space.max_rounds}
        c.log_batch(parent.info.run_id, params=[Param(k, str(v)) for k, v in sweep_params.items()])
        log_reference(c, parent.info.run_id, meta, space)
        _write_json(d / SWEEP_FILE, meta)
        return _fit(meta, space, resources, restore=False)
    finally:
        if started:
            ray.shutdown()


def resume_sweep(name: str, storage: str | None = None, address: str | None = None,
                 retry_errored: bool = False) -> dict[str, Any]:
    import ray

    from zsexp.tracking import client

    meta = read_meta(name, storage)
    space = parse_space(meta["space"], meta["space_source"], meta["model"])
    c = client(meta["tracking_uri"])
    started = _init_ray(address)
    try:
        resources = _resources(meta["options"])
        c.update_run(meta["parent_run_id"], status="RUNNING")           # reopen the parent run
        meta["trial_meta"]["sweep_dir"] = meta["dir"]
        meta["trial_meta"]["retry_errored"] = retry_errored
        return _fit(meta, space, resources, restore=True, retry_errored=retry_errored)
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------- resume reconciliation
STATE_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl",
               "callback-states-{}.pkl")


def _loadable(path: Path) -> bool:
    try:
        if path.name.startswith("experiment_state-"):            # JSON; the others are pickles, whatever
            json.loads(path.read_text())                           # their suffix
        else:
            import ray.cloudpickle as cloudpickle

            with open(path, "rb") as f:
                cloudpickle.load(f)
        return True
    except Exception:  # noqa: BLE001 - truncated or empty file of any kind
        return False


def _repair_experiment_state(d: Path, name: str) -> list[str]:
    """Make Tune's newest snapshot loadable.  Tune writes it in a local staging directory and copies
    it to storage in the background, once per step; a driver killed during that copy leaves truncated
    files in storage.  A truncated file is taken again from the staging copy when this machine still
    has it (Ray keeps it under its temp dir, ``session_*/artifacts/*/NAME/driver_artifacts``);
    otherwise the whole session's snapshot is set aside and Tune restores the previous one."""
    import glob
    import shutil
    import tempfile

    ray_tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    notes = []
    while True:
        states = sorted(d.glob("experiment_state-*.json"))
        if not states:
            return notes
        session = states[-1].stem[len("experiment_state-"):]
        files = [d / t.format(session) for t in STATE_FILES if (d / t.format(session)).exists()]
        bad = [f for f in files if not _loadable(f)]
        for f in bad:
            staged = sorted(glob.glob(str(ray_tmp / "session_*" / "artifacts" / "*" / name / "driver_artifacts" /
                                          f.name)), key=os.path.getmtime, reverse=True)
            for cand in staged:
                if _loadable(Path(cand)):
                    shutil.copyfile(cand, f)
                    notes.append(f"{f.name} taken from the driver's staging copy")
                    break
        if all(_loadable(f) for f in files):
            return notes
        for f in files:
            f.rename(f.with_name(f.name + ".unreadable"))
            notes.append(f"{f.name} set aside (unreadable)")


def _snapshot_trial_ids(d: Path) -> set[str] | None:
    """Trial ids in the newest Tune snapshot (None: there is none)."""
    states = sorted(d.glob("experiment_state-*.json"))
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    return {json.loads(t[0])["trial_id"] for t in state.get("trial_data", [])}


def reconcile(meta: dict[str, Any], known: set[str], retry_errored: bool) -> dict[str, Any]:
    """Before Tune restarts: drop what the driver logged for trials Tune's snapshot never saw.

    Such a trial was created in the last moments before the kill (the snapshot is taken every
    controller step); Tune will not run it.  Its MLflow child run, unless finished, is deleted, and
    its entries leave the durable progress record; the searcher fails its Optuna trial on restore.
    With ``--retry-errored`` the failed trials' outcomes and markers are cleared so they run again."""
    from zsexp.search.callback import MARKER_DIR, write_json_atomic
    from zsexp.tracking import TAG_TRIAL, client
    from zsexp.ui_links import sweep_filter

    d = Path(meta["dir"])
    c = client(meta["tracking_uri"])
    runs = c.search_runs([meta["experiment_id"]], filter_string=sweep_filter(meta["name"]), max_results=10000)
    deleted, kept_orphans = [], []
    for run in runs:
        tid = run.data.tags.get(TAG_TRIAL)
        if tid in known:
            continue
        if run.info.status == "FINISHED":
            kept_orphans.append(tid)
        else:
            c.delete_run(run.info.run_id)
            deleted.append(tid)
    progress = read_progress(d)
    if progress:
        drop = set(progress.get("runs", {})) - known - set(kept_orphans)
        if retry_errored:
            drop_failed = {t for t, o in progress.get("outcomes", {}).items() if o == "failed"}
            for t in drop_failed:
                progress["outcomes"].pop(t, None)
                (d / MARKER_DIR / f"{t}.json").unlink(missing_ok=True)
        for key in ("runs", "best_ckpt", "outcomes", "logged_step", "pending"):
            for t in drop:
                progress.get(key, {}).pop(t, None)
        write_json_atomic(d / CALLBACK_FILE, progress)
    return {"deleted_runs": deleted, "finished_unknown": kept_orphans}


def _fit(meta: dict[str, Any], space: SearchSpace, resources: tuple[dict[str, float], int], restore: bool,
         retry_errored: bool = False) -> dict[str, Any]:
    from ray import tune

    from zsexp.search.optuna_search import ResumableOptunaSearch, journal_storage
    from zsexp.search.stopper import FailureBudget
    from zsexp.tracking import client

    # Tune snapshots its experiment state (trials, searcher, callback) at the end of every controller
    # step, not on a time budget: `zsexp resume` restarts from it, and the driver's own durable record
    # (progress file, trial markers, the Optuna journal) covers the step in flight at a kill.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    d = Path(meta["dir"])
    res, concurrency = resources
    meta["resources"] = res
    trainable = _trainable(meta)
    print(f"[{meta['name']}] {meta['model']} on {meta['dataset_name']}: {meta['trials']} trials, up to "
          f"{concurrency} at once ({', '.join(f'{k}={v:g}' for k, v in res.items())} each), "
          f"objective val {space.metric} ({space.mode}), scheduler {meta['scheduler']}, sampler {space.sampler}")
    print(f"[{meta['name']}] storage {d}; MLflow {meta['tracking_uri']} experiment {meta['experiment']!r}, "
          f"parent run {meta['parent_run_id']}")
    if restore:
        notes = _repair_experiment_state(d, meta["name"])
        if notes:
            print(f"[{meta['name']}] Tune's snapshot was cut by the kill: {'; '.join(notes)}")
        known = _snapshot_trial_ids(d)
        rec = reconcile(meta, known or set(), retry_errored)
        if rec["deleted_runs"]:
            print(f"[{meta['name']}] {len(rec['deleted_runs'])} trial(s) started just before the interruption were "
                  f"never saved by Tune; their unfinished MLflow runs were removed")
        if rec["finished_unknown"]:
            print(f"[{meta['name']}] warning: finished trial(s) {rec['finished_unknown']} are missing from Tune's "
                  f"snapshot; their MLflow runs are kept")
    if restore and known is not None and tune.Tuner.can_restore(str(d)):
        tuner = tune.Tuner.restore(str(d), trainable=trainable, resume_unfinished=True,
                                   resume_errored=retry_errored, restart_errored=False)
    else:
        if restore:   # killed before Tune's first snapshot: start the sweep's Tune run afresh
            print(f"[{meta['name']}] no Tune snapshot yet (interrupted during start-up): starting the trials afresh")
            for f in d.glob("*"):
                if f.name not in (SWEEP_FILE, "optuna_journal.log") and f.is_file():
                    f.unlink()
        callback = _callback(meta, space)
        searcher = ResumableOptunaSearch(space=space.distributions(), metric=space.metric_key, mode=space.mode,
                                         sampler=space.make_sampler(meta["seed"]), storage=journal_storage(d),
                                         study_name=meta["name"])
        searcher.total_trials = meta["trials"]
        if restore:
            searcher.lost, searcher.finished_elsewhere = _fail_running_optuna_trials(d, meta["name"])
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(metric=space.metric_key, mode=space.mode, search_alg=searcher,
                                        scheduler=_scheduler(space, meta["scheduler"]),
                                        num_samples=meta["trials"], max_concurrent_trials=concurrency,
                                        # a trial reuses a finished trial's worker process: no new
                                        # Python, torch import and dataset build per trial
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=meta["name"], storage_path=str(d.parent), callbacks=[callback], verbose=0,
                stop=FailureBudget(callback, meta["max_failed_trials"]),
                failure_config=tune.FailureConfig(max_failures=meta["retries"]),
                # Every checkpoint is kept by default: Tune's snapshot may point at a checkpoint that a
                # `num_to_keep` policy deleted since, and the trial would then fail to resume
                # (ray-project/ray#27790).  --keep-checkpoints N trades that safety for disk.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=meta.get("keep_checkpoints"),
                                                        checkpoint_score_attribute=space.metric_key,
                                                        checkpoint_score_order=space.mode)))
    meta["status"] = "running"
    _write_json(d / SWEEP_FILE, {k: v for k, v in meta.items() if k != "resources"})
    kill_point("startup")
    t0 = time.time()
    results = tuner.fit()
    kill_point("summary")
    summary = summarise(meta, space, results, time.time() - t0)
    done = summary["counts"].get("TERMINATED", 0) + summary["counts"].get("ERROR", 0)
    complete = done + len(rec["finished_unknown"] if restore else []) >= meta["trials"]
    n_failed = list(summary["outcomes"].values()).count("failed")
    budget_stop = meta.get("max_failed_trials") is not None and n_failed > meta["max_failed_trials"]
    try:
        c = client(meta["tracking_uri"])
        if summary.get("best"):
            c.log_metric(meta["parent_run_id"], f"best_{space.metric_key}", summary["best"]["value"])
            if summary.get("margin") is not None:
                c.log_metric(meta["parent_run_id"], "best_margin_over_baseline", summary["margin"])
            c.set_tag(meta["parent_run_id"], "zsexp.best_trial", summary["best"]["trial_id"])
        outcomes = list(summary["outcomes"].values())
        for key, label in (("trials_completed", "completed"), ("trials_early_stopped", "early-stopped"),
                           ("trials_failed", "failed")):
            c.log_metric(meta["parent_run_id"], key, outcomes.count(label))
        c.set_terminated(meta["parent_run_id"], "FINISHED" if complete or budget_stop else "KILLED")
    except ZsexpError as exc:
        print(f"[{meta['name']}] the sweep finished but its MLflow parent run could not be closed ({exc}); "
              f"run `zsexp resume {meta['name']}` when the tracking server answers")
    meta["status"] = "finished" if complete else "stopped" if budget_stop else "interrupted"
    _write_json(d / SWEEP_FILE, {k: v for k, v in meta.items() if k != "resources"})
    print_summary(meta, space, summary)
    summary["complete"] = complete or budget_stop
    if budget_stop and not complete:
        print(f"[{meta['name']}] stopped: {n_failed} trials failed, more than --max-failed-trials "
              f"{meta['max_failed_trials']}")
    elif not complete:
        print(f"[{meta['name']}] interrupted after {summary['n_trials']} of {meta['trials']} trials; "
              f"continue with `zsexp resume {meta['name']}`")
    return summary


def _fail_running_optuna_trials(d: Path, study_name: str) -> tuple[list[str], int]:
    """A restart without a usable Tune snapshot: no trial of the study is known to Tune."""
    from zsexp.search.optuna_search import journal_storage, reconcile_study

    try:
        study = optuna.load_study(study_name=study_name, storage=journal_storage(d))
    except KeyError:
        return [], 0
    return reconcile_study(study, known=set())


def summarise(meta: dict[str, Any], space: SearchSpace, results: Any, wall_s: float) -> dict[str, Any]:
    """Counts, outcomes and the best trial.  The best trial and its best round come from the driver's
    durable record (the same best-round values Optuna was told): a trial's ``progress.csv`` in
    storage can be cut short by a kill, and a finished trial that Tune restarted ends without
    reporting again."""
    counts: dict[str, int] = {}
    by_id: dict[str, Any] = {}
    for r in results:
        status = "ERROR" if r.error else "TERMINATED"
        counts[status] = counts.get(status, 0) + 1
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name.split("_")[2]
        by_id[tid] = r
    progress = read_progress(meta["dir"])
    values = {t: v for t, v in progress.get("best_ckpt", {}).items() if t in by_id and v.get("value") is not None}
    best = None
    if values:
        sign = 1.0 if space.mode == "max" else -1.0
        tid = max(values, key=lambda t: sign * values[t]["value"])
        r, rnd = by_id[tid], int(values[tid]["round"])
        ckpt, metrics = r.checkpoint, {}
        for c, m in r.best_checkpoints or []:
            if int(m.get("training_iteration", -1)) == rnd:
                ckpt, metrics = c, m
        best = {"trial_id": tid, "value": float(values[tid]["value"]), "round": rnd, "config": r.config,
                "checkpoint": ckpt.path if ckpt else None, "run_id": progress.get("runs", {}).get(tid),
                "metrics": {k: v for k, v in metrics.items() if str(k).startswith("val_")}}
    base, chance = reference_values(meta, space)
    return {"name": meta["name"], "counts": counts, "outcomes": progress.get("outcomes", {}), "best": best,
            "peak_concurrency": progress.get("peak", 0), "wall_s": wall_s, "n_trials": len(results),
            "baseline": base, "chance": chance,
            "margin": margin(best["value"] if best else None, base["value"] if base else None, space.mode)}


def reference_values(meta: dict[str, Any], space: SearchSpace) -> tuple[dict | None, float | None]:
    """The baseline's validation objective (``{"model", "lam", "value"}``, None where the task has none or
    the sweep predates baselines) and chance of the objective, from the sweep's stored reference."""
    ref = meta.get("reference") or {}
    b = ref.get("baseline")
    value = (b.get("val") or {}).get(space.metric) if b else None
    base = {"model": b["model"], "lam": b["lam"], "value": float(value)} if value is not None else None
    chance = (ref.get("chance") or {}).get(space.metric)
    return base, (float(chance) if chance is not None else None)


def reference_line(meta: dict[str, Any], space: SearchSpace, best: float | None) -> str:
    """``baseline ridge (lam=0.1) val precision@50=39.00; best trial +2.30 over it; chance 16.67``."""
    base, chance = reference_values(meta, space)
    parts = []
    if base:
        parts.append(f"baseline {base['model']} (lam={base['lam']:g}) val {space.metric}={base['value']:.3f}")
        m = margin(best, base["value"], space.mode)
        if m is not None:
            parts.append(f"best trial {m:+.3f} {'over' if m >= 0 else 'BELOW'} it")
    elif (meta.get("reference") or {}).get("error"):
        parts.append(meta["reference"]["error"])
    elif meta.get("reference") is None:
        parts.append("no baseline recorded (sweep made before zsexp computed baselines)")
    else:
        parts.append(f"no baseline for val {space.metric}")
    if chance is not None:
        parts.append(f"chance {chance:.3f}")
    return "; ".join(parts)


def log_reference(c: Any, run_id: str, meta: dict[str, Any], space: SearchSpace) -> None:
    """The baseline's and chance's validation objective on the sweep's MLflow parent run."""
    base, chance = reference_values(meta, space)
    if base:
        c.log_metric(run_id, f"baseline_{space.metric_key}", base["value"])
        c.set_tag(run_id, "zsexp.baseline", f"{base['model']} lam={base['lam']:g} "
                                            f"({meta['reference']['baseline']['chosen_by']})")
    if chance is not None:
        c.log_metric(run_id, f"chance_{space.metric_key}", chance)


def print_summary(meta: dict[str, Any], space: SearchSpace, s: dict[str, Any]) -> None:
    oc = list(s["outcomes"].values())
    print(f"[{meta['name']}] finished in {s['wall_s']:.1f}s: {s['n_trials']} trials "
          f"({oc.count('completed')} completed, {oc.count('early-stopped')} early-stopped, {oc.count('failed')} "
          f"failed); peak concurrency {s['peak_concurrency']}")
    b = s.get("best")
    if not b:
        print(f"[{meta['name']}] no trial reported {space.metric}")
        return
    print(f"[{meta['name']}] best trial {b['trial_id']}: val {space.metric}={b['value']:.3f} at round {b['round']}")
    print("    config: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(b["config"].items())))
    print(f"    checkpoint: {b['checkpoint']}")
    print(f"    MLflow run: {b['run_id']} (parent {meta['parent_run_id']}, experiment {meta['experiment']!r})")
    print(f"    reference: {reference_line(meta, space, b['value'])}")
    show_links(meta, space)


def show_links(meta: dict[str, Any], space: SearchSpace, ui: str | None = None) -> None:
    """Print the two MLflow UI links of the sweep's trials (a tracking outage only skips them)."""
    from zsexp.ui_links import DEFAULT_UI, print_links, sweep_links

    try:
        links = sweep_links(meta, space.metric_key, space.mode, sorted(space.params), ui or DEFAULT_UI)
    except Exception as exc:  # noqa: BLE001 - links are a convenience; never fail a command for them
        print(f"[{meta['name']}] (no MLflow UI links: {str(exc).splitlines()[0][:200]})")
        return
    print_links(meta["name"], links)


def read_progress(sweep_dir: str | Path) -> dict[str, Any]:
    """The driver callback's mirrored state (runs, outcomes, best values, peak), or {} before the first trial."""
    pf = Path(sweep_dir) / CALLBACK_FILE
    return json.loads(pf.read_text()) if pf.is_file() else {}


def sweep_trials(meta: dict[str, Any], space: SearchSpace) -> list[dict[str, Any]]:
    """Every trial of the sweep in Tune's order: id, status, rounds, best validation value, outcome, config."""
    from ray.tune import ExperimentAnalysis

    progress = read_progress(meta["dir"])
    ea = ExperimentAnalysis(str(meta["dir"]), default_metric=space.metric_key, default_mode=space.mode)
    return [{"trial_id": t.trial_id, "status": t.status,
             "rounds": int(t.last_result.get("training_iteration", 0) or 0),
             "best": progress.get("best_ckpt", {}).get(t.trial_id, {}).get("value"),
             "best_round": progress.get("best_ckpt", {}).get(t.trial_id, {}).get("round"),
             "outcome": progress.get("outcomes", {}).get(t.trial_id), "config": t.config} for t in ea.trials]


def list_sweeps(storage: str | None = None) -> list[dict[str, Any]]:
    """Every sweep under ``storage`` (read-only), oldest first: what ``zsexp status`` without a name shows.
    A sweep whose metadata cannot be read is listed with the reason instead of hiding the others."""
    rows = []
    for name in sweep_names(storage):
        try:
            st = sweep_status(name, storage)
        except Exception as exc:  # noqa: BLE001 - one broken sweep must not hide the rest
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        m, trials = st["meta"], st["trials"]
        rows.append({"name": m["name"], "model": m["model"], "dataset": m["dataset_name"], "status": m["status"],
                     "created": m.get("created", ""), "trials": m["trials"],
                     "finished": sum(t["status"] in ("TERMINATED", "ERROR") for t in trials),
                     "metric": st["metric"], "mode": st["mode"], "best": st["best"],
                     "baseline": (st["baseline"] or {}).get("value"), "margin": st["margin"], "chance": st["chance"]})
    rows.sort(key=lambda r: r.get("created", ""))
    return rows


def sweep_status(name: str, storage: str | None = None) -> dict[str, Any]:
    """Read-only: the sweep's metadata, every trial's state and its best validation value."""
    meta = read_meta(name, storage)
    space = parse_space(meta["space"], meta["space_source"], meta["model"])
    try:
        trials = sweep_trials(meta, space)
    except Exception:  # noqa: BLE001 - no experiment state yet
        trials = []
    bests = [t["best"] for t in trials if t["best"] is not None]
    best = (max(bests) if space.mode == "max" else min(bests)) if bests else None
    base, chance = reference_values(meta, space)
    return {"meta": meta, "metric": space.metric, "mode": space.mode, "trials": trials, "best": best,
            "baseline": base, "chance": chance, "margin": margin(best, base["value"] if base else None, space.mode),
            "reference": reference_line(meta, space, best)}
