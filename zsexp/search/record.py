"""The driver's durable record of a sweep: the progress snapshot with its journal, and the trials' finish markers.

The callback (``zsexp.search.callback``) writes the record before the MLflow writes it implies, so a
driver killed at any point resumes from a state that is never older than what MLflow shows; the
trainable reads the markers so that a trial that finished before the driver died is not trained again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from zsexp.search.storage import CALLBACK_FILE, own_regular_file, read_own_json, write_json_atomic

MARKER_DIR = "zsexp_trials"
# the folder each sweep's driver works in now, set before Tune restores anything: a callback, searcher
# journal or scheduler unpickled from Tune's state names the folder of the driver that pickled it (on
# an object store, another machine's working copy) and is pointed here instead
_CURRENT: dict[str, str] = {}


def set_current_dir(sweep: str, sweep_dir: str | Path) -> None:
    _CURRENT[sweep] = str(sweep_dir)


def current_dir(sweep: str | None) -> str | None:
    return _CURRENT.get(sweep) if sweep else None


def trial_marker(sweep_dir: str | Path, trial_id: str) -> Path:
    """A trial's finish marker; ``trial_id`` may come from a file in storage, so only Tune's id characters
    are accepted (no separator can take the path out of the sweep)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", str(trial_id)):
        raise ValueError(f"not a trial id: {trial_id!r}")
    return Path(sweep_dir) / MARKER_DIR / f"{trial_id}.json"


def _remote(sweep_dir: str | Path) -> Any:
    """The object-store location of a trial's view of the sweep (``s3://...``), else None."""
    from zsexp import objectstore

    return objectstore.parse(str(sweep_dir), "sweep") if objectstore.is_uri(sweep_dir) else None


def write_marker(sweep_dir: str | Path, trial_id: str, outcome: str, error: str | None = None,
                 best: dict[str, Any] | None = None, by: str = "driver") -> None:
    """``by``: the driver (after Tune and the searcher processed the trial's end) or the trial itself (a
    diverged trial, before it raises).  A trial on another machine writes it straight to the object store."""
    body = {"outcome": outcome, "error": (error or "")[-2000:], "best": best, "by": by}
    loc = _remote(sweep_dir)
    if loc is not None:
        from zsexp import objectstore

        trial_marker("", trial_id)                     # the id check
        objectstore.put(loc, f"{MARKER_DIR}/{trial_id}.json", json.dumps(body, default=str).encode())
        return
    marker = trial_marker(sweep_dir, trial_id)
    marker.parent.mkdir(exist_ok=True)
    write_json_atomic(marker, body)


def read_marker(sweep_dir: str | Path, trial_id: str) -> dict[str, Any] | None:
    loc = _remote(sweep_dir)
    if loc is not None:
        from zsexp import objectstore

        trial_marker("", trial_id)
        try:
            raw = objectstore.get(loc, f"{MARKER_DIR}/{trial_id}.json", limit=1 << 20)
            found = json.loads(raw) if raw is not None else None
        except ValueError:
            return None
        return found if isinstance(found, dict) else None
    p = trial_marker(sweep_dir, trial_id)
    try:
        return json.loads(p.read_text()) if p.is_file() else None
    except (OSError, ValueError):
        return None


PER_TRIAL = ("runs", "best_ckpt", "outcomes", "logged_step", "pending", "spent")    # maps by trial id
GLOBAL = ("peak", "best")
JOURNAL_STEM = Path(CALLBACK_FILE).stem


def journal_path(sweep_dir: str | Path, generation: int) -> Path:
    """The durable record's journal of ``generation`` (``zsexp_progress.G.jsonl``)."""
    return Path(sweep_dir) / f"{JOURNAL_STEM}.{generation}.jsonl"


def is_journal(name: str) -> bool:
    return name.startswith(JOURNAL_STEM + ".") and name.endswith(".jsonl")


class ProgressRecord:
    """The driver's durable record: a snapshot (``zsexp_progress.json``) and an append-only journal of the
    changes since it (``zsexp_progress.G.jsonl``, G the snapshot's ``generation``).

    An event appends one line holding its trial's entries (and the sweep's peak and best), so its cost
    does not grow with the sweep; the snapshot is rewritten, under a new generation, once the journal
    has grown past it (amortised O(1) per event), at the start of a session and at the end.  A line cut
    short by a kill is ignored; a journal of another generation than the snapshot's is stale (a kill
    between a snapshot and the removal of the journal it folded in) and is ignored, then removed."""

    MIN_JOURNAL = 64 * 1024

    def __init__(self, sweep_dir: str | Path):
        self.dir = Path(sweep_dir)
        self.generation: int | None = None          # unknown until this process writes a snapshot
        self.journal_bytes = 0
        self.snapshot_bytes = 0

    def journal(self, generation: int) -> Path:
        return journal_path(self.dir, generation)

    def write_snapshot(self, state: dict[str, Any]) -> None:
        path = self.dir / CALLBACK_FILE
        if self.generation is None:               # a new session: go on from the snapshot's generation
            self.generation = int(json.loads(path.read_text()).get("generation", 0)) if path.is_file() else 0
        gen = self.generation + 1
        write_json_atomic(path, {**state, "generation": gen})
        for stale in self.dir.glob(f"{JOURNAL_STEM}.*.jsonl"):
            stale.unlink(missing_ok=True)
        self.generation, self.journal_bytes, self.snapshot_bytes = gen, 0, path.stat().st_size

    def append(self, entry: dict[str, Any], state: Any) -> None:
        """Journal ``entry``; ``state()`` gives the whole state when a new snapshot is due."""
        if self.generation is None or self.journal_bytes > max(self.snapshot_bytes, self.MIN_JOURNAL):
            self.write_snapshot(state())
            return
        line = (json.dumps(entry, default=str) + "\n").encode()
        with open(self.journal(self.generation), "ab") as f:
            f.write(line)
        self.journal_bytes += len(line)
        from zsexp import workcopy

        workcopy.written(self.journal(self.generation))    # on an object store: uploaded before returning


def apply_entry(state: dict[str, Any], entry: dict[str, Any]) -> None:
    tid = entry["trial"]
    for key in PER_TRIAL:
        if key in entry:
            if entry[key] is None:
                state.setdefault(key, {}).pop(tid, None)
            else:
                state.setdefault(key, {})[tid] = entry[key]
    for key in GLOBAL:
        if key in entry:
            state[key] = entry[key]


def read_progress(sweep_dir: str | Path) -> dict[str, Any]:
    """The driver callback's durable state (runs, outcomes, best values, peak, queued MLflow writes): the
    snapshot with its journal applied, or {} before the first trial (see :class:`ProgressRecord`)."""
    d = Path(sweep_dir)
    state = read_own_json(d, CALLBACK_FILE)
    if not isinstance(state, dict):
        return {}
    journal = journal_path(d, int(state.get("generation", 0)))
    if own_regular_file(d, journal.name) is not None:
        for line in journal.read_bytes().split(b"\n"):
            try:
                entry = json.loads(line)
            except ValueError:                      # the last line, cut short by a kill (or empty)
                continue
            if isinstance(entry, dict) and isinstance(entry.get("trial"), str):
                apply_entry(state, entry)
    return state


