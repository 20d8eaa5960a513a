"""Ray's OptunaSearch with a durable study, told each trial's best-round value.

**Durable study.**  The study lives in Optuna's journal file storage in the sweep directory
(:func:`journal_storage`), which appends every ask, intermediate report and tell to a file as it
happens.  Tune pickles the searcher into its periodic snapshot, but a pickled ``JournalStorage``
replays the journal when it is loaded, so a restored searcher sees every trial the driver had
created or finished -- not just those of the snapshot (the in-memory study of ray#48500 would lose
them).  Each Optuna trial carries its Tune trial id as the user attribute ``tune_trial_id``.

**Reconciliation on restore** (:meth:`ResumableOptunaSearch.restore`):

* an Optuna trial that is already finished (told before the driver died, perhaps after Tune's
  last snapshot) is never told or reported to again -- the crash of ray#19274
  (``UpdateFinishedTrialError``) -- and its Tune trial, if Tune resumes it, ends without training
  (the trainable reads the driver's finish marker);
* an Optuna trial still RUNNING whose Tune trial the snapshot does not know was created in the
  last moments before the kill: Tune will never run it, so it is marked FAIL (a RUNNING trial
  would bias the sampler as a ``constant_liar`` guess forever) and counted in ``lost``;
* the sampler's random state is reseeded, so it does not re-suggest the configurations of the
  snapshot's future (optuna#3255);
* a *finished* Optuna trial whose Tune trial the snapshot does not know (possible only when an
  unreadable snapshot had to be set aside for an older one) still counts toward the sweep's
  ``total_trials``: the searcher stops suggesting once Tune's trials and these reach it;
* ``total_trials`` is the sweep's current target (:func:`set_target`), which ``zsexp resume --trials``
  may have raised since the snapshot; trials given to the study by ``--warm-start`` never count.

**One rule from sweep to registry.**  Optuna is told a trial's *best* round value when it
completes, computed from the study's own record of intermediate values, so a resumed trial keeps
its earlier rounds.  The MLflow child run, ``zsexp status`` and ``zsexp select`` rank by the same
value, and the selection trains each candidate for exactly that many rounds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from zsexp.compat import optuna as ot_compat
from zsexp.compat import ray_tune

JOURNAL_FILE = "optuna_journal.log"
TUNE_ID_ATTR = "tune_trial_id"
LOST_ATTR = "zsexp_lost"
WARM_ATTR = "zsexp_warm_from"     # a trial given to the study from an earlier sweep (``--warm-start``)

# The trial count each study is to reach, set by the driver before Tune restores the searcher: a sweep
# grown with ``zsexp resume --trials N`` restores a searcher whose pickled ``total_trials`` is the old one.
_TARGETS: dict[str, int] = {}


def set_target(study_name: str, trials: int) -> None:
    _TARGETS[study_name] = trials


def counts(frozen) -> bool:
    """A finished trial of the study that counts toward the sweep's trials: not lost to a kill, not a
    warm-start trial of an earlier sweep."""
    return (frozen.state.is_finished() and not frozen.user_attrs.get(LOST_ATTR)
            and not frozen.user_attrs.get(WARM_ATTR))


def journal_storage(sweep_dir: str | Path, sweep: str | None = None) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(SweepJournalBackend(sweep_dir, sweep))


class SweepJournalBackend(JournalFileBackend):
    """Optuna's journal file of a sweep.  Every append is uploaded before it returns when the sweep lives
    in an object store (``zsexp.workcopy``).  Unpickled from Tune's state (the searcher holds it), it
    opens the journal in the sweep's current folder (``record.current_dir``), not in the folder of the
    driver that pickled it, which may be another machine's working copy."""

    def __init__(self, sweep_dir: str | Path, sweep: str | None = None):
        path = str(Path(sweep_dir) / JOURNAL_FILE)
        # an O_EXCL lock file: a lock left by a killed driver is broken after the grace period
        super().__init__(path, lock_obj=JournalFileOpenLock(path, grace_period=5))
        self._sweep = sweep

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        super().append_logs(logs)
        from zsexp import workcopy

        workcopy.written(self._file_path)

    def __reduce__(self):
        return (_reopen_journal, (self._sweep, str(Path(self._file_path).parent)))


def _reopen_journal(sweep: str | None, folder: str) -> SweepJournalBackend:
    from zsexp.search.record import current_dir

    return SweepJournalBackend(current_dir(sweep) or folder, sweep)


# the MLflow child run of each Tune trial, set by the sweep's callback in the same driver process
RUN_IDS: dict[str, str] = {}


def _describe_trial(ot_trial: Any, result: dict[str, Any], error: bool) -> None:
    """What optuna-dashboard shows beside a trial's values, set before it is told (a finished trial can no
    longer be changed): its MLflow run id, its outcome and what it spent (zsexp.search.compute)."""
    from zsexp.search.compute import KEYS

    tid = ot_trial.user_attrs.get(TUNE_ID_ATTR) if hasattr(ot_trial, "user_attrs") else None
    attrs: dict[str, Any] = {}
    if tid and tid in RUN_IDS:
        attrs["mlflow_run_id"] = RUN_IDS[tid]
    done = result.get("model_done") or int(result.get("training_iteration", 0) or 0) >= int(
        result.get("max_rounds", 0) or 0)
    attrs["outcome"] = "failed" if error else "completed" if done else "early-stopped"
    attrs.update({k: float(result[k]) for k in KEYS if isinstance(result.get(k), (int, float))})
    for key, value in attrs.items():
        ot_trial.set_user_attr(key, value)


def name_objectives(study: optuna.Study, space: Any) -> None:
    """The study's objectives named as the metrics they are (``val_precision_at_50``, ``compute_wall_s``):
    what optuna-dashboard shows instead of "Objective 0"."""
    if study.metric_names is None:
        import warnings

        with warnings.catch_warnings():            # "experimental" since Optuna 3.2, unchanged through 5.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(space.metric_keys))


def reconcile_study(study: optuna.Study, known: set[int]) -> tuple[list[str], int]:
    """Trials of ``study`` outside ``known`` (Optuna trial ids Tune still has): a RUNNING one never ran
    and never will -- it is failed and marked lost; a finished one that is not lost still counts.
    Returns (the lost trials' Tune ids, how many finished trials count)."""
    lost, finished = [], 0
    for frozen in study.get_trials(deepcopy=False):
        if ot_compat.trial_storage_id(frozen) in known:
            continue
        if frozen.state == TrialState.RUNNING:
            ot_compat.set_trial_user_attr(study, ot_compat.trial_storage_id(frozen), LOST_ATTR, True)
            study.tell(frozen.number, state=TrialState.FAIL)
            lost.append(str(frozen.user_attrs.get(TUNE_ID_ATTR, f"optuna#{frozen.number}")))
        elif counts(frozen):
            finished += 1
    return lost, finished


class TuneGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler under Tune and ``zsexp resume``.

    * Optuna's sampler ends a study by calling ``Study.stop`` once every grid point is told, which is
      only allowed inside ``Study.optimize``; under Tune (ask and tell) it would raise in the last
      trial's tell.  Tune's ``num_samples`` (at most the grid size, checked by ``zsexp search``) ends
      the sweep instead.  Trial number i < grid size takes grid point i of the seed-shuffled grid, so
      a full sweep visits every point exactly once.
    * A trial lost to a kill (created just before it, never run; :func:`reconcile_study` fails it and
      marks it ``zsexp_lost``) does not count as a visited point: the trial Tune asks for in its place
      takes that point, instead of a repeat of a visited one."""

    def after_trial(self, study, trial, state, values) -> None:
        return None

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        done, running = set(), set()
        for t in ot_compat.all_trials(study):
            gid = t.system_attrs.get("grid_id")
            if gid is None or t.user_attrs.get(LOST_ATTR):
                continue
            if t.state.is_finished():
                done.add(gid)
            elif t.state == TrialState.RUNNING:
                running.add(gid)
        every = set(range(ot_compat.grid_size(self)))
        return sorted(every - done - running) or sorted(every - done)


class ResumableOptunaSearch(OptunaSearch):
    lost: list[str]
    total_trials: int | None = None
    finished_elsewhere: int = 0

    # -------------------------------------------------------------- helpers
    def _frozen(self, trial_id: str):
        ot_trial = ray_tune.optuna_trials(self).get(trial_id)
        if ot_trial is None:
            return None
        return ot_compat.get_trial(ray_tune.optuna_study(self), ot_compat.trial_storage_id(ot_trial))

    def _is_finished(self, trial_id: str) -> bool:
        frozen = self._frozen(trial_id)
        return frozen is not None and frozen.state.is_finished()

    # -------------------------------------------------------------- Tune hooks
    def suggest(self, trial_id: str):
        if self.total_trials and len(ray_tune.optuna_trials(self)) + self.finished_elsewhere >= self.total_trials:
            return OptunaSearch.FINISHED
        config = super().suggest(trial_id)
        ot_trial = ray_tune.optuna_trials(self).get(trial_id)
        if isinstance(config, dict) and ot_trial is not None:
            ot_trial.set_user_attr(TUNE_ID_ATTR, trial_id)
        return config

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.total_trials = _TARGETS.get(ray_tune.optuna_study_name(self), self.total_trials)   # grown since then
        known = {ot_compat.trial_storage_id(ot) for ot in ray_tune.optuna_trials(self).values()}
        study = ray_tune.optuna_study(self)
        self.lost, self.finished_elsewhere = reconcile_study(study, known)
        if hasattr(study.sampler, "reseed_rng"):
            study.sampler.reseed_rng()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        frozen = self._frozen(trial_id)
        if frozen is None or frozen.state.is_finished():
            return
        if result.get("training_iteration") in frozen.intermediate_values:
            return                     # a round re-run after a restore from an older snapshot: told already
        super().on_trial_result(trial_id, result)

    def _best_round_result(self, trial_id: str, result: dict | None) -> dict | None:
        """``result`` with the objective replaced by the best value over the trial's rounds."""
        frozen = self._frozen(trial_id)
        if not result or frozen is None or isinstance(self.metric, list):
            return result
        values = [v for v in frozen.intermediate_values.values() if v is not None and math.isfinite(v)]
        last = result.get(self.metric)
        if isinstance(last, (int, float)) and math.isfinite(last):
            values.append(float(last))
        if not values:
            return result
        return {**result, self.metric: max(values) if ray_tune.optuna_mode(self) == "max" else min(values)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in ray_tune.optuna_trials(self) or self._is_finished(trial_id):
            ray_tune.optuna_completed(self).add(trial_id)        # told before a kill: never told twice
            return None
        _describe_trial(ray_tune.optuna_trials(self)[trial_id], result or {}, error)
        return super().on_trial_complete(trial_id, self._best_round_result(trial_id, result), error)
