"""Fault injection for the kill tests and ``benchmarks/kill_resume.py``: no effect unless asked for.

``ZSEXP_FAULT_KILL=POINT[:N]`` makes the driver SIGKILL its whole process group (itself and the
Ray it started: a machine dying) the N-th time (default 1st) it passes the named point:

* ``startup``        -- the sweep's metadata and MLflow parent exist, Tune has not started;
* ``trial_complete`` -- a trial finished and the driver's durable record says so, MLflow not yet;
* ``trial_logged``   -- a trial finished and its MLflow child run is FINISHED;
* ``checkpoint_upload`` -- while a finished trial's best checkpoint is being logged to MLflow;
* ``summary``        -- every trial ran; the sweep summary is being written;
* ``select_register`` -- (``zsexp select``) the winner's model is logged, not yet registered.

``ZSEXP_ROUND_LOG=FILE`` appends ``trial_id round`` to FILE for every round a trial trains, so
a benchmark can count the compute that a kill made run twice.

``ZSEXP_FAULT_KILL_WORKER=R`` makes a trial's worker process SIGKILL itself once in round R (a lost
worker; a flag file in the sweep directory keeps it to once per sweep).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_passed: dict[str, int] = {}


def kill_point(name: str) -> None:
    spec = os.environ.get("ZSEXP_FAULT_KILL")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == int(nth or 1):
        print(f"[fault] killing the driver at {name} #{_passed[name]}", flush=True)
        os.killpg(os.getpgid(0), signal.SIGKILL)


def note_round(trial_id: str, round_: int) -> None:
    path = os.environ.get("ZSEXP_ROUND_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{trial_id} {round_}\n")


def maybe_kill_worker(sweep_dir: str | None, round_: int) -> None:
    want = os.environ.get("ZSEXP_FAULT_KILL_WORKER")
    if not want or not sweep_dir or int(want) != round_:
        return
    from zsexp import objectstore

    if objectstore.is_uri(sweep_dir):          # once per sweep: the flag is created only if absent
        if objectstore.put_conditional(objectstore.parse(sweep_dir), "fault_worker_killed", b"1", None) is None:
            return
    else:
        flag = Path(sweep_dir) / "fault_worker_killed"
        if flag.exists():
            return
        flag.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
