"""How the Tuner of a sweep is built: the trainable with its resources, the MLflow callback, ASHA."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from zsexp.meta import SweepMeta
from zsexp.search.growth import RUNGS_FILE
from zsexp.search.optuna_search import JOURNAL_FILE
from zsexp.search.space import SearchSpace
from zsexp.search.storage import CALLBACK_FILE, SWEEP_FILE
from zsexp.search.trainable import UPDATES_KEY, train_trial, trial_params


def make_trainable(meta: SweepMeta):
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_trial, meta=meta.trial_meta), meta.resources)


def make_callback(meta: SweepMeta, space: SearchSpace):
    """The MLflow/progress callback of a new sweep (a resumed sweep gets its own back from Tune's state)."""
    from zsexp.search.callback import MlflowSweepCallback
    from zsexp.tracking import Progress

    progress = Progress(meta.name, space.metric, space.mode, every_s=meta.progress_every_s)
    return MlflowSweepCallback(
        tracking_uri=meta.tracking_uri, experiment_id=meta.experiment_id,
        parent_run_id=meta.parent_run_id, sweep=meta.name, metric_key=space.metric_key, mode=space.mode,
        max_rounds=space.max_rounds, params_of=functools.partial(trial_params, meta.trial_meta),
        flat_of=dict, progress=progress, common_tags=meta.tags,
        state_file=str(Path(meta.dir) / CALLBACK_FILE))


def make_scheduler(space: SearchSpace, name: str, sweep: str):
    from ray.tune.schedulers import FIFOScheduler

    from zsexp.search.growth import DurableASHA

    if name == "asha" and space.unit == "updates":       # rungs at equal optimiser updates
        return DurableASHA(time_attr=UPDATES_KEY, max_t=space.max_updates, grace_period=space.grace_updates,
                           reduction_factor=space.reduction_factor, sweep=sweep)
    if name == "asha":
        return DurableASHA(time_attr="training_iteration", max_t=space.max_rounds, grace_period=space.grace_rounds,
                           reduction_factor=space.reduction_factor, sweep=sweep)
    return FIFOScheduler()


def build_tuner(meta: SweepMeta, space: SearchSpace, concurrency: int, restore: bool, retry_errored: bool,
                known: set[str] | None):
    """``Tuner.restore`` of a verified snapshot, or a new Tuner (a new sweep, or one killed before Tune's
    first snapshot: its Tune files are then deleted unread and the trials start afresh under the same
    sweep, MLflow parent and study)."""
    from ray import tune

    from zsexp import workcopy
    from zsexp.search.growth import set_sweep_dir
    from zsexp.search.optuna_search import set_target
    from zsexp.search.storage import tune_storage

    d = Path(meta.dir)
    root, fs = tune_storage(d)
    tune_dir = f"{root}/{meta.name}"
    set_target(meta.name, meta.trials)           # what a restored searcher and generator are to reach
    set_sweep_dir(meta.name, d)                  # where a restored ASHA keeps its rungs
    trainable = make_trainable(meta)
    if restore and known is not None and tune.Tuner.can_restore(tune_dir, storage_filesystem=fs):
        return tune.Tuner.restore(tune_dir, trainable=trainable, resume_unfinished=True, storage_filesystem=fs,
                                  resume_errored=retry_errored, restart_errored=False)
    if restore:
        print(f"[{meta.name}] no Tune snapshot yet (interrupted during start-up): starting the trials afresh")
        for f in d.glob("*"):
            if f.name not in (SWEEP_FILE, JOURNAL_FILE, RUNGS_FILE) and f.is_file():
                f.unlink()
        workcopy.push(d)                         # on an object store: removed there too
    return new_tuner(meta, space, concurrency, trainable, restarted=restore)


def new_tuner(meta: SweepMeta, space: SearchSpace, concurrency: int, trainable: Any, restarted: bool):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from zsexp.compat import ray_tune
    from zsexp.search.growth import GrowableSearchGenerator
    from zsexp.search.optuna_search import ResumableOptunaSearch, journal_storage, name_objectives
    from zsexp.search.recovery import fail_running_optuna_trials
    from zsexp.search.stopper import FailureBudget
    from zsexp.search.storage import tune_storage

    d = Path(meta.dir)
    root, fs = tune_storage(d)
    callback = make_callback(meta, space)
    multi = space.multi                              # several objectives: Optuna's lists (zsexp.search.objectives)
    searcher = ResumableOptunaSearch(space=space.distributions(),
                                     metric=space.metric_keys if multi else space.metric_key,
                                     mode=space.modes if multi else space.mode,
                                     sampler=space.make_sampler(meta.seed), storage=journal_storage(d, meta.name),
                                     study_name=meta.name)
    name_objectives(ray_tune.optuna_study(searcher), space)
    searcher.total_trials = meta.trials
    if restarted:
        searcher.lost, searcher.finished_elsewhere = fail_running_optuna_trials(d, meta.name)
    # the wrappers tune.run would add around a Searcher, with a target that can grow (zsexp.search.growth)
    search_alg = GrowableSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=concurrency))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric=space.metric_key, mode=space.mode, search_alg=search_alg,
                                    scheduler=make_scheduler(space, meta.scheduler, meta.name),
                                    num_samples=meta.trials,
                                    # a trial reuses a finished trial's worker process: no new
                                    # Python, torch import and dataset build per trial
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=meta.name, storage_path=root, storage_filesystem=fs, callbacks=[callback], verbose=0,
            stop=FailureBudget(callback, meta.max_failed_trials),
            failure_config=tune.FailureConfig(max_failures=meta.retries),
            # Every checkpoint is kept by default: Tune's snapshot may point at a checkpoint that a
            # `num_to_keep` policy deleted since, and the trial would then fail to resume
            # (ray-project/ray#27790).  --keep-checkpoints N trades that safety for disk.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=meta.keep_checkpoints,
                                                    checkpoint_score_attribute=space.metric_key,
                                                    checkpoint_score_order=space.mode)))
