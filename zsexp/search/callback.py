"""The sweep's Tune callback: MLflow child runs, progress, trial outcomes -- the driver's durable record.

Every MLflow write is an operation queued per trial (``start``: create or re-attach the child run
and log its params; ``metrics``; ``finish``: outcome, error, best checkpoint) and flushed in order
at each hook.  When the tracking server is unreachable the operations wait in the queue -- trials
keep running -- and are written when it answers again.

**Durable record.**  The callback's state (child run ids, outcomes, best values, the last round
logged per trial, the queue) is recorded in the sweep directory *before* the MLflow writes it
implies: on every event one journal line with the trial's entries, beside a snapshot of the whole
state (:class:`zsexp.search.storage.ProgressRecord`), so an event costs the same at any sweep size.
Tune's own snapshot of this state lags (Tune takes it every few seconds), so on ``zsexp resume``
:meth:`set_state` takes the durable record, which is never older.  Each finished trial also gets a
marker ``zsexp_trials/<trial_id>.json`` that the trainable reads: a trial Tune's snapshot still
shows running, but that had finished before the driver died, ends at once instead of training
again (see :func:`zsexp.search.trainable.train_trial`).  Replayed operations are idempotent: a
replayed start looks its child run up by its trial-id tag before creating one, metric rounds already
logged are skipped, and a finished run is not reopened.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from zsexp.faults import kill_point
from zsexp.search import compute
from zsexp.search.integrity import SnapshotSigning, driver_staging_dir
from zsexp.search.mlflow_writes import MlflowWrites
from zsexp.search.optuna_search import RUN_IDS
from zsexp.search.record import PER_TRIAL, ProgressRecord, read_progress, write_marker
from zsexp.tracking import Progress, numeric_metrics


def run_name(trial_id: str, searched: dict[str, Any], width: int = 72) -> str:
    """A child run's name: the trial id and its searched values, short enough for the runs table."""
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    name = trial_id + " " + " ".join(f"{k.replace('_', '')}={fmt(v)}" for k, v in sorted(searched.items()))
    return name if len(name) <= width else name[: width - 1] + "…"


class MlflowSweepCallback(MlflowWrites, SnapshotSigning, tune.Callback):
    """Logs every trial to MLflow from the driver, prints progress, counts failures."""

    def __init__(self, *, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep: str,
                 metric_key: str, mode: str, max_rounds: int, params_of: Callable[[dict], dict[str, str]],
                 flat_of: Callable[[dict], dict[str, Any]], progress: Progress, common_tags: dict[str, str],
                 state_file: str | None = None):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.sweep, self.metric_key, self.mode, self.max_rounds = sweep, metric_key, mode, max_rounds
        self.params_of, self.flat_of, self.progress, self.common_tags = params_of, flat_of, progress, common_tags
        self.runs: dict[str, str] = {}
        self.best_ckpt: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, str] = {}
        self.logged_step: dict[str, int] = {}                # last round whose metrics were queued
        self.spent: dict[str, dict[str, float]] = {}         # every reported round's compute, re-runs too
        self.pending: dict[str, list[list[Any]]] = {}       # trial id -> queued operations
        self.running: set[str] = set()
        self.counts: Counter[str] = Counter()               # outcomes by kind, kept as they are recorded
        self.replayed: set[str] = set()                     # trials whose queued writes came from a record
        self.peak_concurrency = 0
        self.best: dict[str, Any] | None = None
        self.state_file = state_file
        self.record = ProgressRecord(Path(state_file).parent) if state_file else None
        self._client = None
        self._outage_since: float | None = None
        self._errored: list[Any] = []                       # trials failed in this session (their error.pkl)
        self._signed_once = False
        self._listing: tuple[Any, list[str]] | None = None  # Tune's staging directory, listed at its mtime
        self._nodes: dict[str, list[str]] = {}               # trial id -> the node last tagged on its run
        self._hosts: dict[str, list[str]] = {}               # trial id -> the hosts it ran on, this session

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None            # a live client is not part of the pickled RunConfig
        # this session's, not the sweep's
        state.update(_errored=[], _signed_once=False, _listing=None, _nodes={}, _hosts={})
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickled from Tune's state: the durable record is in the sweep's current folder (on an object
        store, this driver's working copy, not the one of the driver that pickled it)."""
        from zsexp.search.record import current_dir

        self.__dict__.update(state)
        now = current_dir(self.sweep)
        if now and self.state_file and Path(self.state_file).parent != Path(now):
            self.state_file = str(Path(now) / Path(self.state_file).name)
            self.record = ProgressRecord(Path(now))

    @property
    def sweep_dir(self) -> Path | None:
        return Path(self.state_file).parent if self.state_file else None

    # -------------------------------------------------------------- helpers
    def _save(self, tid: str | None = None) -> None:
        """The durable record (see module doc): one journal line with trial ``tid``'s entries, or (no
        ``tid``) a snapshot of the whole state (``zsexp.search.storage.ProgressRecord``)."""
        if self.record is None:
            return
        if tid is None:
            self.record.write_snapshot(self.get_state())
            return
        maps = {"runs": self.runs, "best_ckpt": self.best_ckpt, "outcomes": self.outcomes,
                "logged_step": self.logged_step, "pending": self.pending, "spent": self.spent}
        entry = {"trial": tid, **{k: maps[k].get(tid) or None for k in PER_TRIAL}, "peak": self.peak_concurrency,
                 "best": self.best}
        self.record.append(entry, self.get_state)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _state(self) -> dict[str, Any]:
        c = self.counts
        return {"running": len(self.running), "failed": c["failed"], "completed": c["completed"] + c["early-stopped"],
                "stopped": c["early-stopped"], "best": self.best}

    @property
    def n_failed(self) -> int:
        return self.counts["failed"]

    # -------------------------------------------------------------- Tune hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        tid = trial.trial_id
        if tid in self.outcomes:          # finished before the driver died; the trainable ends at once
            self._flush()
            return
        self.running.add(tid)
        self.peak_concurrency = max(self.peak_concurrency, len(self.running))
        self._enqueue(tid, ["start", self.params_of(trial.config), run_name(tid, self.flat_of(trial.config))],
                      flush=False)
        self._save(tid)
        self._flush()
        if tid in self.runs:                # the study's trial shows its MLflow run (optuna-dashboard)
            RUN_IDS[tid] = self.runs[tid]
        self.progress.maybe_print(self._state())

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = trial.trial_id
        if tid in self.outcomes:
            return
        step = int(result.get("training_iteration", 0))
        spend = compute.round_spend(result)
        if spend is not None:                         # spent, whether the round is new or re-run
            self.spent[tid] = compute.add(self.spent.get(tid), spend)
        if step <= self.logged_step.get(tid, 0):      # re-run of a round already logged (resumed trial)
            if spend is not None:
                self._save(tid)
            return
        self.logged_step[tid] = step
        ts = int(time.time() * 1000)
        values = {**numeric_metrics(result), **self.spent.get(tid, {})}     # compute_*: the driver's count
        metrics = [[k, v, ts, step] for k, v in values.items() if math.isfinite(v)]
        value = result.get(self.metric_key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or self._better(value, self.best["value"]):
                self.best = {"value": float(value), "trial": tid, "round": step,
                             "params": self.flat_of(trial.config), "run_id": self.runs.get(tid)}
            tb = self.best_ckpt.get(tid)
            if tb is None or self._better(value, tb["value"]):
                self.best_ckpt[tid] = {"value": float(value), "round": step}
        if metrics:
            self._enqueue(tid, ["metrics", metrics], flush=False)
        node = [str(result.get("node_id") or ""), str(result.get("node_ip") or ""), str(result.get("hostname") or "")]
        if any(node) and self._nodes.get(tid) != node:       # where the trial runs (again, after a node died)
            self._nodes[tid] = node
            hosts = self._hosts.setdefault(tid, [])
            if node[2] and node[2] not in hosts:
                hosts.append(node[2])
            self._enqueue(tid, ["node", *node, ",".join(hosts)], flush=False)
        self._save(tid)                   # durable before the write; a replayed identical metric is a no-op
        self._flush()
        self.progress.maybe_print(self._state())

    @staticmethod
    def _tune_best_checkpoint(trial) -> tuple[str | None, int | None]:
        """The best checkpoint Tune kept for the trial (CheckpointConfig scores it by the objective)."""
        manager = trial.run_metadata.checkpoint_manager
        best = manager.best_checkpoint_result or manager.latest_checkpoint_result
        if best is None:
            return None, None
        return best.checkpoint.path, int(best.metrics.get("training_iteration", 0))

    def _finish(self, trial, outcome: str, error: str | None = None) -> None:
        tid = trial.trial_id
        self.running.discard(tid)
        if tid in self.outcomes:          # already recorded before a kill: only the queue is replayed
            self._flush()
            return
        self.outcomes[tid] = outcome
        self.counts[outcome] += 1
        path, ck_round = self._tune_best_checkpoint(trial)
        self._enqueue(tid, ["finish", outcome, error, path, ck_round, self.best_ckpt.get(tid),
                            {"spent": self.spent.get(tid), "step": self.logged_step.get(tid, 0)}], flush=False)
        if self.sweep_dir is not None:    # the intent is durable before any MLflow write
            write_marker(self.sweep_dir, tid, outcome, error, self.best_ckpt.get(tid))
        self._save(tid)
        kill_point("trial_complete")
        self._flush()
        self._save(tid)
        kill_point("trial_logged")
        self.progress.maybe_print(self._state(), force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        finished = last.get("model_done") or int(last.get("training_iteration", 0)) >= last.get(
            "max_rounds", self.max_rounds)
        self._finish(trial, "completed" if finished else "early-stopped")

    def on_trial_error(self, iteration, trials, trial, **info):
        # Tune writes the error to the trial's local directory before calling back; storage syncs later
        local = trial.error_file
        err = Path(local).read_text() if local and Path(local).is_file() else trial.get_error()
        self._finish(trial, "failed", str(err or "unknown error"))
        self._errored.append(trial)
        self.sign_snapshot(trials)                 # its error.pkl, which Tune's results read back

    def on_trial_recover(self, iteration, trials, trial, **info):
        # a trial retried after its worker or node died (FailureConfig): Tune wrote its error.pkl all the
        # same, and it stays in the trial's folder that a resume reads
        self._errored.append(trial)
        self.sign_snapshot(trials)

    def setup(self, **info):
        if self.sweep_dir:
            self.drop_own_files_from_staging(driver_staging_dir(self.sweep))

    def on_step_end(self, iteration, trials, **info):
        self.sign_snapshot(trials)

    def on_experiment_end(self, trials, **info):
        self.sign_snapshot(trials)                 # Tune's final snapshot, written just before this call
        self._flush()
        self._save()
        if self.pending:
            n = sum(len(v) for v in self.pending.values())
            print(f"[{self.sweep}] {n} MLflow writes could not be made (server unreachable); they are kept "
                  f"and written by `zsexp resume {self.sweep}` once the server answers")

    def get_state(self) -> dict | None:
        return {"runs": dict(self.runs), "best_ckpt": dict(self.best_ckpt), "outcomes": dict(self.outcomes),
                "logged_step": dict(self.logged_step), "peak": self.peak_concurrency, "best": self.best,
                "pending": dict(self.pending), "spent": dict(self.spent)}

    def set_state(self, state: dict) -> None:
        """Tune's snapshot of the state, unless the durable mirror exists (it is never older)."""
        if self.state_file and Path(self.state_file).is_file():
            try:
                state = read_progress(Path(self.state_file).parent)
            except ValueError:
                pass
            self.record = ProgressRecord(Path(self.state_file).parent)     # a new session: snapshot first
        self.runs = dict(state.get("runs", {}))
        self.best_ckpt = dict(state.get("best_ckpt", {}))
        self.outcomes = dict(state.get("outcomes", {}))
        self.counts = Counter(self.outcomes.values())
        self.logged_step = {k: int(v) for k, v in state.get("logged_step", {}).items()}
        self.spent = {k: dict(v) for k, v in (state.get("spent") or {}).items() if isinstance(v, dict)}
        self.peak_concurrency = int(state.get("peak", 0))
        self.best = state.get("best")
        self.pending = {k: list(v) for k, v in state.get("pending", {}).items()}
        self.replayed = set(self.pending)
        self.running = set()
