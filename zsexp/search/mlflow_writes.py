"""The sweep's MLflow writes as a queue: each trial's operations are applied in order, kept while the tracking
server does not answer, and written when it answers again (trials keep running meanwhile).

``start`` creates or re-attaches the trial's child run and logs its params; ``metrics`` a round's values;
``node`` where the trial ran; ``finish`` its outcome, error and best checkpoint.  A replayed operation is
idempotent: a replayed start looks its run up by its trial-id tag first, a finished run is not reopened.
The queue belongs to :class:`zsexp.search.callback.MlflowSweepCallback`, whose durable record keeps it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from zsexp.faults import kill_point
from zsexp.tags import TAG_ERROR, TAG_KIND, TAG_OUTCOME, TAG_SWEEP, TAG_TRIAL
from zsexp.tracking import find_child_run


@contextlib.contextmanager
def local_checkpoint(ckpt_path: str | None, sweep_dir: Path | None):
    """The trial's best checkpoint as a local folder for MLflow to upload: Tune's folder itself, or (a
    sweep in an object store) a scratch copy of it, made only when the path lies inside the sweep's
    prefix; None when there is nothing to upload."""
    if not ckpt_path:
        yield None
        return
    if Path(ckpt_path).is_dir():
        yield ckpt_path
        return
    from zsexp import objectstore, workcopy

    loc = workcopy.remote(sweep_dir) if sweep_dir is not None else None
    inside = loc is not None and ckpt_path.startswith(loc.arrow_path() + "/") and ".." not in ckpt_path.split("/")
    if not inside:
        yield None
        return
    import pyarrow.fs as pafs

    scratch = tempfile.mkdtemp(prefix="zsexp-ckpt-")
    try:
        pafs.copy_files(ckpt_path, scratch, source_filesystem=objectstore.arrow_fs(),
                        destination_filesystem=pafs.LocalFileSystem())
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class MlflowWrites:
    """The write queue of the sweep callback (attributes set by its constructor: ``tracking_uri``,
    ``experiment_id``, ``parent_run_id``, ``sweep``, ``metric_key``, ``common_tags``, ``runs``,
    ``pending``, ``replayed``, ``_client``, ``_outage_since``; ``_save(tid)`` records a trial's state)."""

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _enqueue(self, trial_id: str, op: list[Any], flush: bool = True) -> None:
        self.pending.setdefault(trial_id, []).append(op)
        if flush:
            self._flush()

    def _flush(self) -> None:
        for tid in list(self.pending):
            ops = self.pending[tid]
            while ops:
                try:
                    self._apply(tid, ops[0])
                except Exception as exc:  # noqa: BLE001 - any tracking failure: keep the op, retry later
                    self.replayed.add(tid)        # the failed write may have reached the server
                    if self._outage_since is None:
                        self._outage_since = time.time()
                        print(f"[{self.sweep}] MLflow at {self.tracking_uri} failed "
                              f"({str(exc).splitlines()[0][:160]}); trials keep running, tracking writes "
                              f"are queued and retried")
                    self._save(tid)
                    return
                ops.pop(0)
            del self.pending[tid]
            self._save(tid)                       # its queue is empty: not replayed after a kill
        if self._outage_since is not None:
            print(f"[{self.sweep}] MLflow is back after {time.time() - self._outage_since:.0f}s; queued writes done")
            self._outage_since = None

    def _apply(self, tid: str, op: list[Any]) -> None:
        from mlflow.entities import Metric, Param

        kind = op[0]
        c = self.client
        if kind == "start":
            # a run is looked up only for a replayed or retried start: a start queued and applied in this
            # process cannot have made one before (a search per new trial grows with the sweep)
            run_id = self.runs.get(tid) or (find_child_run(c, self.experiment_id, self.sweep, tid)
                                            if tid in self.replayed else None)
            if run_id is None:
                name = op[2] if len(op) > 2 else f"{self.sweep}-{tid}"
                tags = {**self.common_tags, "mlflow.parentRunId": self.parent_run_id, TAG_SWEEP: self.sweep,
                        TAG_TRIAL: tid, TAG_KIND: "trial", "mlflow.runName": name}
                run_id = c.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
            self.runs[tid] = run_id
            # re-logging identical params is allowed: a replay after a kill completes a half-written start
            c.log_batch(run_id, params=[Param(k, v) for k, v in op[1].items()])
            c.update_run(run_id, status="RUNNING")
        elif kind == "metrics":
            c.log_batch(self.runs[tid], metrics=[Metric(k, v, ts, step) for k, v, ts, step in op[1]])
        elif kind == "node":              # the Ray node (id, IP, host) that ran the trial's latest round
            keys = ("zsexp.node_id", "zsexp.node_ip", "zsexp.node_host", "zsexp.node_hosts")   # hosts: all so far
            for key, value in zip(keys, op[1:], strict=False):
                if value:
                    c.set_tag(self.runs[tid], key, value)
        elif kind == "finish":
            _, outcome, error, ckpt_path, ckpt_round, best = op[:6]
            spent = op[6] if len(op) > 6 and isinstance(op[6], dict) else {}     # queued before compute existed: none
            run_id = self.runs[tid]
            if spent.get("spent"):       # the trial's totals, re-run rounds included (zsexp.search.compute)
                c.log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), int(spent.get("step", 0)))
                                             for k, v in spent["spent"].items()])
            c.set_tag(run_id, TAG_OUTCOME, outcome)
            if error:
                c.set_tag(run_id, TAG_ERROR, error[-4500:])
            with local_checkpoint(ckpt_path, getattr(self, "sweep_dir", None)) as local:
                if local is not None:
                    kill_point("checkpoint_upload")
                    c.log_artifacts(run_id, local, artifact_path="best_checkpoint")
                    c.set_tag(run_id, "zsexp.best_checkpoint_round", str(ckpt_round))
            if best:
                c.set_tag(run_id, "zsexp.best_round", str(best["round"]))
                key = f"best_{self.metric_key}"
                if key not in c.get_run(run_id).data.metrics:      # a replay logs it once
                    c.log_metric(run_id, key, best["value"])
            c.set_terminated(run_id, "FAILED" if outcome == "failed" else "FINISHED")
