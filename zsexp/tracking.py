"""MLflow: experiment and run naming, tags, artifacts -- written from the driver process only.

A sweep is one MLflow *parent* run; each Tune trial is a *child* run (``mlflow.parentRunId``),
tagged with the sweep name and trial id.  The child of a trial is found by those tags before one
is created, so a resumed sweep re-attaches to its runs and never duplicates them, even when the
driver died before Tune saved this callback's state.  Metric names are MLflow-safe ('@' -> '_at_',
'/' -> '_'), identical across trials so that the MLflow UI's compare view lines them up.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zsexp.errors import ZsexpError
from zsexp.paths import default_artifact_root, default_tracking_uri

TAG_SWEEP = "zsexp.sweep"
TAG_TRIAL = "zsexp.trial_id"
TAG_KIND = "zsexp.kind"
TAG_OUTCOME = "zsexp.outcome"
TAG_ERROR = "zsexp.error"


def safe_name(key: str) -> str:
    return key.replace("@", "_at_").replace("/", "_")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def redact_uri(uri: str) -> str:
    """``http://user:pass@host`` -> ``http://host``: credentials never reach metadata, tags or logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.scheme.startswith("http") and (parts.username or parts.password):
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def _credentials_from_uri(uri: str) -> str:
    """Move credentials embedded in an HTTP URI into MLflow's own variables; return the bare URI."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    if parts.scheme.startswith("http") and parts.username:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", unquote(parts.username))
        if parts.password:
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", unquote(parts.password))
    return redact_uri(uri)


def client(tracking_uri: str | None = None):
    """An MlflowClient on ``tracking_uri`` (default: $MLFLOW_TRACKING_URI or SQLite under ZSEXP_HOME),
    checked to be reachable: an unreachable server is one clear error, not minutes of retries."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = _credentials_from_uri(tracking_uri or default_tracking_uri())
    if uri.startswith("http"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    mlflow.set_tracking_uri(uri)
    c = MlflowClient(tracking_uri=uri)
    try:
        c.search_experiments(max_results=1)
    except Exception as exc:
        msg = str(exc).splitlines()[0][:300]
        if "401" in msg or "Unauthorized" in msg or "credentials" in msg.lower():
            raise ZsexpError(f"MLflow tracking server {uri} refused the credentials (401); set "
                             f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None
        raise ZsexpError(f"cannot reach the MLflow tracking store {uri}: {msg}") from None
    return c


def ensure_experiment(c, name: str, uri: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if not uri.startswith("http"):
        artifact_location = (default_artifact_root() / name).as_uri()
    return c.create_experiment(name, artifact_location=artifact_location)


def find_child_run(c, experiment_id: str, sweep: str, trial_id: str) -> str | None:
    runs = c.search_runs([experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and "
                                                         f"tags.`{TAG_TRIAL}` = '{trial_id}'", max_results=2)
    return runs[0].info.run_id if runs else None


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in result.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if k in ("training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "pid",
                 "time_since_restore", "iterations_since_restore", "done"):
            continue
        out[safe_name(k)] = float(v)
    return out


class Progress:
    """Throttled one-line sweep status: running / done / early-stopped / failed, best so far."""

    def __init__(self, name: str, metric: str, mode: str, every_s: float = 5.0,
                 out: Callable[[str], None] | None = None):
        # `print` is looked up when used: Tune swaps builtins.print during a run, and this object is
        # pickled with the experiment state (a stored reference to the old print would not pickle)
        self.name, self.metric, self.mode, self.every_s, self.out = name, metric, mode, every_s, out
        self._last = 0.0

    def maybe_print(self, state: dict[str, Any], force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        best = state.get("best")
        best_txt = "no result yet"
        if best:
            cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best["params"].items()))
            best_txt = f"best {self.metric}={best['value']:.3f} (trial {best['trial']}: {cfg})"
        (self.out or print)(f"[{self.name}] running {state['running']} | done {state['completed']} "
                 f"(early-stopped {state['stopped']}) | failed {state['failed']} | {best_txt}")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def make_sweep_callback(**kwargs: Any):
    """The Tune callback class is defined lazily so importing zsexp does not import Ray."""
    from ray import tune

    class MlflowSweepCallback(tune.Callback):
        """Logs every trial to MLflow from the driver, prints progress, counts failures.

        Every MLflow write is an operation queued per trial (``start``: create or re-attach the
        child run and log its params; ``metrics``; ``finish``: outcome, error, best checkpoint) and
        flushed in order at each hook.  When the tracking server is unreachable the operations wait
        in the queue -- trials keep running -- and are written when it answers again.  The queue is
        part of the callback state that Tune checkpoints (``get_state``/``set_state``), so a driver
        killed during an outage replays it on ``zsexp resume``.
        """

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
            self.pending: dict[str, list[list[Any]]] = {}       # trial id -> queued operations
            self.running: set[str] = set()
            self.peak_concurrency = 0
            self.best: dict[str, Any] | None = None
            self.state_file = state_file
            self._client = None
            self._outage_since: float | None = None

        def __getstate__(self) -> dict:
            state = self.__dict__.copy()
            state["_client"] = None            # a live client is not part of the pickled RunConfig
            return state

        # -------------------------------------------------------------- MLflow operations
        @property
        def client(self):
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            return self._client

        def _enqueue(self, trial_id: str, op: list[Any]) -> None:
            self.pending.setdefault(trial_id, []).append(op)
            self._flush()

        def _flush(self) -> None:
            for tid in list(self.pending):
                ops = self.pending[tid]
                while ops:
                    try:
                        self._apply(tid, ops[0])
                    except Exception as exc:  # noqa: BLE001 - any tracking failure: keep the op, retry later
                        if self._outage_since is None:
                            self._outage_since = time.time()
                            print(f"[{self.sweep}] MLflow at {self.tracking_uri} failed "
                                  f"({str(exc).splitlines()[0][:160]}); trials keep running, tracking writes "
                                  f"are queued and retried")
                        self._save()
                        return
                    ops.pop(0)
                del self.pending[tid]
            if self._outage_since is not None:
                print(f"[{self.sweep}] MLflow is back after {time.time() - self._outage_since:.0f}s; "
                      f"queued writes done")
                self._outage_since = None

        def _apply(self, tid: str, op: list[Any]) -> None:
            from mlflow.entities import Metric, Param

            kind = op[0]
            c = self.client
            if kind == "start":
                run_id = self.runs.get(tid) or find_child_run(c, self.experiment_id, self.sweep, tid)
                if run_id is None:
                    tags = {**self.common_tags, "mlflow.parentRunId": self.parent_run_id, TAG_SWEEP: self.sweep,
                            TAG_TRIAL: tid, TAG_KIND: "trial", "mlflow.runName": f"{self.sweep}-{tid}"}
                    run_id = c.create_run(self.experiment_id, tags=tags, run_name=f"{self.sweep}-{tid}").info.run_id
                    self.runs[tid] = run_id
                    c.log_batch(run_id, params=[Param(k, v) for k, v in op[1].items()])
                self.runs[tid] = run_id
                c.update_run(run_id, status="RUNNING")
            elif kind == "metrics":
                c.log_batch(self.runs[tid], metrics=[Metric(k, v, ts, step) for k, v, ts, step in op[1]])
            elif kind == "finish":
                _, outcome, error, ckpt_path, ckpt_round, best = op
                run_id = self.runs[tid]
                c.set_tag(run_id, TAG_OUTCOME, outcome)
                if error:
                    c.set_tag(run_id, TAG_ERROR, error[-4500:])
                if ckpt_path and Path(ckpt_path).is_dir():
                    c.log_artifacts(run_id, ckpt_path, artifact_path="best_checkpoint")
                    c.set_tag(run_id, "zsexp.best_checkpoint_round", str(ckpt_round))
                if best:
                    c.set_tag(run_id, "zsexp.best_round", str(best["round"]))
                    c.log_metric(run_id, f"best_{self.metric_key}", best["value"])
                c.set_terminated(run_id, "FAILED" if outcome == "failed" else "FINISHED")

        # -------------------------------------------------------------- helpers
        def _save(self) -> None:
            """Mirror the state to a JSON file beside the sweep, for `zsexp status` and the summary."""
            if not self.state_file:
                return
            tmp = Path(self.state_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(self.get_state(), default=str))
            os.replace(tmp, self.state_file)

        def _better(self, a: float, b: float) -> bool:
            return a > b if self.mode == "max" else a < b

        def _state(self) -> dict[str, Any]:
            return {"running": len(self.running), "failed": sum(o == "failed" for o in self.outcomes.values()),
                    "completed": sum(o in ("completed", "early-stopped") for o in self.outcomes.values()),
                    "stopped": sum(o == "early-stopped" for o in self.outcomes.values()), "best": self.best}

        @property
        def n_failed(self) -> int:
            return self._state()["failed"]

        # -------------------------------------------------------------- Tune hooks
        def on_trial_start(self, iteration, trials, trial, **info):
            tid = trial.trial_id
            self.running.add(tid)
            self.peak_concurrency = max(self.peak_concurrency, len(self.running))
            self._enqueue(tid, ["start", self.params_of(trial.config)])
            self._save()
            self.progress.maybe_print(self._state())

        on_trial_restore = on_trial_start

        def on_trial_result(self, iteration, trials, trial, result, **info):
            tid = trial.trial_id
            step = int(result.get("training_iteration", 0))
            ts = int(time.time() * 1000)
            metrics = [[k, v, ts, step] for k, v in numeric_metrics(result).items() if math.isfinite(v)]
            if metrics:
                self._enqueue(tid, ["metrics", metrics])
            value = result.get(self.metric_key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                if self.best is None or self._better(value, self.best["value"]):
                    self.best = {"value": float(value), "trial": tid, "round": step,
                                 "params": self.flat_of(trial.config), "run_id": self.runs.get(tid)}
                tb = self.best_ckpt.get(tid)
                if tb is None or self._better(value, tb["value"]):
                    self.best_ckpt[tid] = {"value": float(value), "round": step}
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
            self.outcomes[tid] = outcome
            path, ck_round = self._tune_best_checkpoint(trial)
            self._enqueue(tid, ["finish", outcome, error, path, ck_round, self.best_ckpt.get(tid)])
            self._save()
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

        def on_experiment_end(self, trials, **info):
            self._flush()
            self._save()
            if self.pending:
                n = sum(len(v) for v in self.pending.values())
                print(f"[{self.sweep}] {n} MLflow writes could not be made (server unreachable); they are kept "
                      f"and written by `zsexp resume {self.sweep}` once the server answers")

        def get_state(self) -> dict | None:
            return {"runs": dict(self.runs), "best_ckpt": dict(self.best_ckpt), "outcomes": dict(self.outcomes),
                    "peak": self.peak_concurrency, "best": self.best, "pending": dict(self.pending)}

        def set_state(self, state: dict) -> None:
            self.runs = dict(state.get("runs", {}))
            self.best_ckpt = dict(state.get("best_ckpt", {}))
            self.outcomes = dict(state.get("outcomes", {}))
            self.peak_concurrency = int(state.get("peak", 0))
            self.best = state.get("best")
            self.pending = {k: list(v) for k, v in state.get("pending", {}).items()}

    return MlflowSweepCallback(**kwargs)


def start_ui(tracking_uri: str | None, host: str, port: int) -> int:
    """``mlflow ui`` on zsexp's store (the SQLite file under ZSEXP_HOME unless a URI is given)."""
    uri = tracking_uri or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if not uri.startswith("http"):
        cmd += ["--default-artifact-root", default_artifact_root().as_uri()]
    print(f"MLflow UI on http://{host}:{port} (store {uri}); Ctrl-C stops it")
    return subprocess.call(cmd)
