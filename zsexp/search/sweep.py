"""``zsexp search`` / ``resume``: a sweep = one Ray Tune experiment + one MLflow parent run.

The pieces live by concern: where a sweep is stored (``storage``), how Ray is reached and sized
(``cluster``), how the Tuner is built (``tuner``), how a killed sweep recovers (``recovery``), what
status prints (``status``), signatures of Tune's state (``integrity``) and the writer lock (``lock``).
This module reads a command into a checked request and runs it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from zsexp import workcopy
from zsexp.errors import ZsexpError
from zsexp.faults import kill_point
from zsexp.meta import SweepMeta
from zsexp.names import check_name, filter_value
from zsexp.paths import default_tracking_uri
from zsexp.search import integrity
from zsexp.search.cluster import init_ray, trial_resources
from zsexp.search.lock import SweepLock
from zsexp.search.options import MAX_TRIALS, SweepOptions, validate_options
from zsexp.search.recovery import reconcile, recover_snapshot, snapshot_trial_ids
from zsexp.search.space import SearchSpace, load_space, parse_space
from zsexp.search.status import log_reference, print_front, print_summary, summarise
from zsexp.search.storage import (
    SWEEP_FILE,
    check_key_folder,
    check_writable_state,
    read_meta,
    refuse_existing,
    sweep_dir,
    write_json_atomic,
)
from zsexp.tags import TAG_BEST_TRIAL, TAG_ERROR, TAG_FINGERPRINT, TAG_KIND, TAG_SWEEP, TAG_TRIALS, TAG_WARM_START


def prepare_space(o: SweepOptions) -> SearchSpace:
    """The search space with ``--set`` pinned and ``--sampler`` applied; its sampler built once (so an
    unknown sampler option is refused here)."""
    from zsexp.config import parse_set

    space = load_space(o.space, o.model)
    if o.sets:     # --set pins a key for every trial; a searched key becomes fixed
        pinned = parse_set(list(o.sets))
        raw = dict(space.raw)
        raw["fixed"] = {**(raw.get("fixed") or {}), **pinned}
        raw["params"] = {k: v for k, v in (raw.get("params") or {}).items() if k.split("[")[0] not in pinned}
        space = parse_space(raw, f"{space.source} + --set", o.model)
    if o.sampler:
        space = parse_space({**space.raw, "fixed": space.fixed, "sampler": {"name": o.sampler}}, space.source, o.model)
    if o.scheduler:                  # --scheduler is checked against the space's objectives like its own key
        space = parse_space({**space.raw, "fixed": space.fixed, "scheduler": o.scheduler}, space.source, o.model)
    try:
        space.make_sampler(o.seed)
    except (TypeError, ValueError) as exc:
        raise ZsexpError(f"{space.source}: `sampler` options {space.sampler_args} are not accepted by Optuna's "
                         f"{space.sampler} sampler ({exc})") from None
    if space.grid_size is not None and o.trials > space.grid_size:
        raise ZsexpError(f"{space.source}: the grid has {space.grid_size} points; --trials {o.trials} would repeat "
                         f"some: pass --trials {space.grid_size} (the whole grid) or fewer (a seeded subset)")
    return space


def run_sweep(o: SweepOptions) -> dict[str, Any]:
    """A new sweep.  Every check that can refuse it (options, space, data, name, storage, tracking store,
    Ray resources) runs before anything is written: a refused command leaves no sweep directory, no
    MLflow run and no registry entry.  The sweep is locked from then on (one writer), and a failure
    after the start closes its MLflow parent run FAILED with the reason."""
    import ray

    from zsexp.baselines import sweep_reference
    from zsexp.data import dataset_ref, load_dataset
    from zsexp.models import require_discriminative_validation
    from zsexp.tracking import check_tracking_uri, client

    validate_options(o)
    o = dataclasses.replace(o, dataset=dataset_ref(o.dataset))     # trials run in their own working directory
    space = prepare_space(o)
    data = load_dataset(o.dataset, seed=o.data_seed)
    require_discriminative_validation(data)
    name = o.name or f"{o.model}-{data.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    d = sweep_dir(check_name(name, "sweep name (from the model and dataset; pass --name)"), o.storage)
    check_key_folder(d)
    refuse_existing(d, name)
    trial_meta = {"model": o.model, "dataset": o.dataset, "data_seed": o.data_seed, "seed": o.seed,
                  "fixed": space.fixed, "fit_split": "train", "max_rounds": space.max_rounds,
                  "device": o.device, "sweep_dir": workcopy.describe(d), "metric_key": space.metric_key}
    warm = _warm_plan(o, name, data, space, trial_meta)
    uri = o.tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)                                     # reachable, without creating a store yet
    reference = sweep_reference(o.model, data, space.fixed)      # validation classes only, like the trials
    opts = {"gpus": o.gpus, "gpus_per_trial": o.gpus_per_trial, "cpus_per_trial": o.cpus_per_trial,
            "max_concurrent": o.max_concurrent}
    started = init_ray(o.address)
    try:
        resources = trial_resources(opts)                        # the cluster can run it: only now write anything
        with SweepLock(d.parent, name, "search"):
            refuse_existing(d, name)                       # another driver made it while we started Ray
            meta = _new_meta(o, name, d, data, space, uri, opts, reference, trial_meta)
            with failed_on_error(meta):
                c = client(uri)
                _open_parent(c, meta, space, o)
                if warm is not None:
                    _warm(c, meta, space, warm)
                write_json_atomic(d / SWEEP_FILE, meta.to_json(), indent=2)
                return _fit(meta, space, resources, restore=False)
    finally:
        if started:
            ray.shutdown()


def _warm_plan(o: SweepOptions, name: str, data: Any, space: SearchSpace, trial_meta: dict[str, Any]) -> Any:
    """``--warm-start``: which of the earlier sweep's trials the new study takes (None without it)."""
    if o.warm_start is None:
        return None
    from zsexp.search import warm as warm_start

    if o.warm_start == name:
        raise ZsexpError(f"--warm-start {o.warm_start}: a sweep cannot warm-start itself; to run it on, use "
                         f"`zsexp resume {name} --trials N`")
    return warm_start.plan(read_meta(o.warm_start, o.storage), o.model, data, space, trial_meta)


def _new_meta(o: SweepOptions, name: str, d: Path, data: Any, space: SearchSpace, uri: str, opts: dict[str, Any],
              reference: Any, trial_meta: dict[str, Any]) -> SweepMeta:
    """What the sweep file records of a new sweep: enough to resume, grow, select and show it."""
    from zsexp.tracking import git_commit, redact_uri

    tags = {"zsexp.model": o.model, "zsexp.dataset": data.name, TAG_FINGERPRINT: data.fingerprint(),
            "zsexp.git_commit": git_commit(), "zsexp.storage": workcopy.describe(d)}
    return SweepMeta(
        name=name, dir=str(d), model=o.model, dataset=o.dataset, dataset_name=data.name,
        fingerprint=data.fingerprint(), trials=o.trials, scheduler=o.scheduler or space.scheduler, seed=o.seed,
        space=space.raw | {"fixed": space.fixed}, space_source=space.source,
        tracking_uri=redact_uri(uri), experiment=o.experiment or f"zsexp-{o.model}-{data.name}", tags=tags,
        options=opts, retries=o.retries, max_failed_trials=o.max_failed_trials,
        keep_checkpoints=o.keep_checkpoints, reference=reference, growable=True,
        progress_every_s=o.progress_every_s, created=dt.datetime.now().isoformat(),
        trial_meta=trial_meta)


def _open_parent(c: Any, meta: SweepMeta, space: SearchSpace, o: SweepOptions) -> None:
    """The sweep's MLflow parent run (a start killed before it wrote the sweep file left at most this run
    behind: it is taken over), its parameters, search space and reference values; then the directory."""
    from mlflow.entities import Param

    from zsexp.tracking import ensure_experiment

    exp_id = ensure_experiment(c, meta.experiment, meta.tracking_uri)
    found = c.search_runs([exp_id], filter_string=f"tags.`{TAG_SWEEP}` = {filter_value(meta.name)} and "
                                                  f"tags.`{TAG_KIND}` = 'sweep'", max_results=1)
    parent = found[0] if found else c.create_run(exp_id, run_name=meta.name,
                                                 tags={**meta.tags, TAG_SWEEP: meta.name, TAG_KIND: "sweep"})
    meta.experiment_id, meta.parent_run_id = exp_id, parent.info.run_id
    Path(meta.dir).mkdir(parents=True, exist_ok=True)
    c.log_text(parent.info.run_id, json.dumps(space.raw, indent=2, default=str), "search_space.json")
    sweep_params = {"model": o.model, "dataset": o.dataset, "trials": o.trials, "scheduler": meta.scheduler,
                    "sampler": space.sampler, "gpus": o.gpus, "gpus_per_trial": o.gpus_per_trial,
                    "objective": space.metric, "mode": space.mode, "max_rounds": space.max_rounds}
    c.log_batch(parent.info.run_id, params=[Param(k, str(v)) for k, v in sweep_params.items()])
    log_reference(c, parent.info.run_id, meta, space)


def _warm(c: Any, meta: SweepMeta, space: SearchSpace, warm: Any) -> None:
    """Give the earlier sweep's taken trials to the new study; record it on the parent run and in the meta."""
    from zsexp.search import warm as warm_start

    warm_start.apply(warm, Path(meta.dir), meta.name, space)
    meta.warm_start = warm.summary()
    c.set_tag(meta.parent_run_id, TAG_WARM_START, warm.source)
    c.log_metric(meta.parent_run_id, "warm_start_trials_taken", len(warm.taken))
    c.log_metric(meta.parent_run_id, "warm_start_trials_skipped", len(warm.skipped))
    c.log_text(meta.parent_run_id, warm.report(), "warm_start.json")
    print(f"[{meta.name}] warm start from sweep {warm.source!r}: {len(warm.taken)} finished trial(s) given to the "
          f"sampler as history (not re-run, not counted in --trials), {len(warm.skipped)} skipped")
    for s in warm.skipped[:10]:
        print(f"    skipped {s['trial']}: {s['reason'][:200]}")
    if len(warm.skipped) > 10:
        print(f"    ... and {len(warm.skipped) - 10} more (the parent run's artifact warm_start.json lists them all)")


class failed_on_error:
    """Around a started sweep: an exception closes the MLflow parent run FAILED (reason as a tag) and
    marks the sweep ``failed`` in its metadata, instead of leaving both RUNNING for ever."""

    def __init__(self, meta: SweepMeta):
        self.meta = meta

    def __enter__(self) -> failed_on_error:
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None:
            return False
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        reason = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        if not self.meta.parent_run_id:
            return False
        try:
            from mlflow.tracking import MlflowClient

            c = MlflowClient(tracking_uri=self.meta.tracking_uri)
            c.set_tag(self.meta.parent_run_id, TAG_ERROR, reason)
            c.set_terminated(self.meta.parent_run_id, status)
        except Exception:  # noqa: BLE001 - the tracking store itself may be what failed
            pass
        d = Path(self.meta.dir)
        if (d / SWEEP_FILE).is_file():
            self.meta.status = "interrupted" if status == "KILLED" else "failed"
            write_json_atomic(d / SWEEP_FILE, self.meta.to_json(), indent=2)
        return False


def check_growth(meta: SweepMeta, space: SearchSpace, trials: int) -> None:
    """``zsexp resume NAME --trials N``: refused unless N can be honoured (never fewer than the sweep has,
    never past its grid or the documented cap, only for a sweep built to grow)."""
    if trials < meta.trials:
        raise ZsexpError(f"sweep {meta.name!r} already has {meta.trials} trials; --trials {trials} would drop some: "
                         f"pass {meta.trials} or more (a sweep only grows)")
    if trials > MAX_TRIALS:
        raise ZsexpError(f"--trials must be at most {MAX_TRIALS:,}, got {trials}")
    if space.grid_size is not None and trials > space.grid_size:
        raise ZsexpError(f"sweep {meta.name!r} is a grid of {space.grid_size} points; --trials {trials} would repeat "
                         f"some: pass at most {space.grid_size}")
    if trials > meta.trials and not meta.growable:
        raise ZsexpError(f"sweep {meta.name!r} was made by a zsexp version whose Tune state cannot take more trials; "
                         f"start a new sweep from its trials: `zsexp search {meta.model} --warm-start {meta.name}`")


def resume_sweep(name: str, storage: str | None = None, address: str | None = None,
                 retry_errored: bool = False, trust_storage: bool = False,
                 trials: int | None = None) -> dict[str, Any]:
    """Continue a sweep; with ``trials`` (more than it has) it goes on to that many trials in all: the
    same Tune experiment, Optuna study, ASHA rungs and MLflow parent run (``zsexp.search.growth``)."""
    import ray

    from zsexp.tracking import check_tracking_uri, client

    meta = read_meta(name, storage)
    space = parse_space(meta.space, meta.space_source, meta.model)
    if trials is not None:
        check_growth(meta, space, trials)
    check_tracking_uri(meta.tracking_uri)
    d = Path(meta.dir)
    check_writable_state(d)
    with SweepLock(d.parent, name, "resume"):
        notes = recover_snapshot(d, name, trust_storage)       # before Ray: nothing unverified is ever loaded
        workcopy.push(d)                                       # what recovery set aside, in the store too
        started = init_ray(address)
        try:
            resources = trial_resources(meta.options)
            c = client(meta.tracking_uri)
            c.update_run(meta.parent_run_id, status="RUNNING")           # reopen the parent run
            if trials is not None and trials > meta.trials:
                print(f"[{name}] growing the sweep from {meta.trials} to {trials} trials: the same Optuna study, "
                      f"ASHA rungs and MLflow parent run")
                meta.grown.append({"from": meta.trials, "to": trials, "at": dt.datetime.now().isoformat()})
                meta.trials = trials       # written to the sweep file before Tune starts (_fit)
                c.set_tag(meta.parent_run_id, TAG_TRIALS, str(trials))
            meta.trial_meta["retry_errored"] = retry_errored
            with failed_on_error(meta):
                return _fit(meta, space, resources, restore=True, retry_errored=retry_errored, notes=notes)
        finally:
            if started:
                ray.shutdown()


def _fit(meta: SweepMeta, space: SearchSpace, resources: tuple[dict[str, float], int], restore: bool,
         retry_errored: bool = False, notes: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the sweep's Tuner to its end, then close the MLflow parent run and summarise."""
    from zsexp.search.tuner import build_tuner

    # Tune snapshots its experiment state (every trial, the searcher, the callback) on its own rule: at
    # least every 10 s, at most 5% of the driver's time (TUNE_GLOBAL_CHECKPOINT_S, "auto" unless the
    # user sets it).  A snapshot holds every trial, so one at every controller step would make the
    # driver's cost per trial grow with the sweep.  `zsexp resume` restarts from the newest snapshot and
    # the driver's durable record (progress journal, trial markers, the Optuna journal) covers what
    # happened since (docs/design/resume.md).
    d = Path(meta.dir)
    res, concurrency = resources
    meta.resources = res
    _announce(meta, space, res, concurrency)
    known, rec = None, {"deleted_runs": [], "finished_unknown": []}
    if restore:
        known, rec = _reconcile(meta, notes or [], retry_errored)
        workcopy.push(d)                 # cleared markers: trials on other machines read them from the store
    tuner = build_tuner(meta, space, concurrency, restore=restore, retry_errored=retry_errored, known=known)
    meta.status = "running"
    write_json_atomic(d / SWEEP_FILE, meta.to_json(), indent=2)
    workcopy.fetch(d / "tuner.pkl")              # on an object store Tune wrote it there
    integrity.record(d, {"tuner.pkl": d / "tuner.pkl"})       # Tune wrote it just now, in this process
    kill_point("startup")
    t0 = time.time()
    results = tuner.fit()
    kill_point("summary")
    summary = summarise(meta, space, results, time.time() - t0)
    return _close(meta, space, results, summary, len(rec["finished_unknown"]))


def _announce(meta: SweepMeta, space: SearchSpace, res: dict[str, float], concurrency: int) -> None:
    print(f"[{meta.name}] {meta.model} on {meta.dataset_name}: {meta.trials} trials, up to "
          f"{concurrency} at once ({', '.join(f'{k}={v:g}' for k, v in res.items())} each), "
          f"objective val {space.metric} ({space.mode}), scheduler {meta.scheduler}, sampler {space.sampler}")
    print(f"[{meta.name}] storage {workcopy.describe(meta.dir)}; MLflow {meta.tracking_uri} experiment "
          f"{meta.experiment!r}, parent run {meta.parent_run_id}")


def _reconcile(meta: SweepMeta, notes: list[str], retry_errored: bool) -> tuple[set[str] | None, dict]:
    """Before a restored Tuner runs: the stores agree with Tune's snapshot (see ``recovery.reconcile``)."""
    if notes:
        print(f"[{meta.name}] Tune's snapshot was cut by the kill: {'; '.join(notes)}")
    known = snapshot_trial_ids(Path(meta.dir))
    rec = reconcile(meta, known or set(), retry_errored)
    if rec["deleted_runs"]:
        print(f"[{meta.name}] {len(rec['deleted_runs'])} trial(s) started just before the interruption were "
              f"never saved by Tune; their unfinished MLflow runs were removed")
    if rec["finished_unknown"]:
        print(f"[{meta.name}] warning: finished trial(s) {rec['finished_unknown']} are missing from Tune's "
              f"snapshot; their MLflow runs are kept")
    return known, rec


def _close(meta: SweepMeta, space: SearchSpace, results: Any, summary: dict[str, Any],
           finished_unknown: int) -> dict[str, Any]:
    """The parent run's final metrics and status, the sweep's status, the summary lines and exit state."""
    done = summary["counts"].get("TERMINATED", 0) + summary["counts"].get("ERROR", 0)
    complete = done + finished_unknown >= meta.trials
    n_failed = list(summary["outcomes"].values()).count("failed")
    budget_stop = meta.max_failed_trials is not None and n_failed > meta.max_failed_trials
    _close_parent(meta, space, summary, "FINISHED" if complete or budget_stop else "KILLED")
    meta.status = "finished" if complete else "stopped" if budget_stop else "interrupted"
    write_json_atomic(Path(meta.dir) / SWEEP_FILE, meta.to_json(), indent=2)
    print_summary(meta, space, summary)
    if summary.get("front") is not None:
        print_front(meta.name, space.metric_keys, summary["front"])
    summary["complete"] = complete or budget_stop
    if complete and summary["n_trials"] and n_failed == summary["n_trials"]:
        first = next((r.error for r in results if r.error), None)
        why = str(first).strip().splitlines()[-1][:300] if first else "see `zsexp status`"
        raise ZsexpError(f"every one of the sweep's {n_failed} trials failed (last line of the first error: {why}); "
                         f"`zsexp status {meta.name}` lists them, the MLflow child runs hold each error")
    if budget_stop and not complete:
        print(f"[{meta.name}] stopped: {n_failed} trials failed, more than --max-failed-trials "
              f"{meta.max_failed_trials}")
    elif not complete:
        print(f"[{meta.name}] interrupted after {summary['n_trials']} of {meta.trials} trials; "
              f"continue with `zsexp resume {meta.name}`")
    return summary


def _close_parent(meta: SweepMeta, space: SearchSpace, summary: dict[str, Any], status: str) -> None:
    from zsexp.tracking import client

    try:
        c = client(meta.tracking_uri)
        if summary.get("best"):
            c.log_metric(meta.parent_run_id, f"best_{space.metric_key}", summary["best"]["value"])
            if summary.get("margin") is not None:
                c.log_metric(meta.parent_run_id, "best_margin_over_baseline", summary["margin"])
            c.set_tag(meta.parent_run_id, TAG_BEST_TRIAL, summary["best"]["trial_id"])
        c.log_metric(meta.parent_run_id, "trials_target", meta.trials)     # the `trials` param is the first target
        for key, value in summary.get("compute", {}).items():              # the sweep's totals, re-runs included
            c.log_metric(meta.parent_run_id, key, value)
        if space.multi:                       # the Pareto front: tags, JSON and plot (zsexp.search.pareto)
            from zsexp.search.pareto import publish
            from zsexp.search.record import read_progress

            summary["front"] = publish(c, meta, space, read_progress(meta.dir).get("runs", {}))
        outcomes = list(summary["outcomes"].values())
        for key, label in (("trials_completed", "completed"), ("trials_early_stopped", "early-stopped"),
                           ("trials_failed", "failed")):
            c.log_metric(meta.parent_run_id, key, outcomes.count(label))
        c.set_terminated(meta.parent_run_id, status)
    except ZsexpError as exc:
        print(f"[{meta.name}] the sweep finished but its MLflow parent run could not be closed ({exc}); "
              f"run `zsexp resume {meta.name}` when the tracking server answers")
