"""The sweep's stored description: the durable progress record (snapshot + journal) and Tune's snapshot
read as plain JSON."""

from __future__ import annotations

import json

from zsexp.search.record import ProgressRecord, read_progress
from zsexp.search.storage import CALLBACK_FILE, snapshot_trials


def _entry(tid: str, **maps) -> dict:
    return {"trial": tid, "runs": None, "best_ckpt": None, "outcomes": None, "logged_step": None, "pending": None,
            "peak": 1, "best": None, **maps}


def test_progress_journal_replays_compacts_and_skips_a_cut_line(tmp_path):
    state = {"runs": {}, "outcomes": {}, "logged_step": {}, "best_ckpt": {}, "pending": {}, "peak": 0, "best": None}
    rec = ProgressRecord(tmp_path)
    rec.append(_entry("a"), lambda: state)                # the first write of a session is a snapshot
    snap = tmp_path / CALLBACK_FILE
    assert json.loads(snap.read_text())["generation"] == 1
    before = snap.stat()
    rec.append(_entry("a", runs="r1", pending=[["start", {}]], logged_step=1), lambda: state)
    rec.append(_entry("a", runs="r1", logged_step=2, outcomes="completed"), lambda: state)
    rec.append(_entry("b", runs="r2", logged_step=1), lambda: state)
    after = snap.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)   # an event appends only
    got = read_progress(tmp_path)
    assert got["runs"] == {"a": "r1", "b": "r2"} and got["outcomes"] == {"a": "completed"}
    assert got["logged_step"] == {"a": 2, "b": 1} and got["pending"] == {}            # emptied queue dropped
    with open(rec.journal(1), "ab") as f:                                              # a kill mid-line
        f.write(b'{"trial": "b", "outcomes": "comp')
    assert read_progress(tmp_path)["outcomes"] == {"a": "completed"}
    # once the journal outgrows the snapshot, the next event writes a new snapshot and drops the journal
    rec.MIN_JOURNAL = 0
    full = read_progress(tmp_path)
    rec.append(_entry("c", runs="r3"), lambda: {**full, "runs": {**full["runs"], "c": "r3"}})
    assert rec.generation == 2 and not rec.journal(1).exists()
    assert read_progress(tmp_path)["runs"] == {"a": "r1", "b": "r2", "c": "r3"}
    rec.journal(1).write_text(json.dumps(_entry("z", runs="stale")) + "\n")           # a generation ago: ignored
    assert "z" not in read_progress(tmp_path)["runs"]


def test_an_old_single_file_record_still_loads(tmp_path):
    old = {"runs": {"a": "r1"}, "outcomes": {"a": "completed"}, "peak": 2}
    (tmp_path / CALLBACK_FILE).write_text(json.dumps(old))
    assert read_progress(tmp_path) == old


def test_snapshot_trials_reads_tune_state_without_unpickling(tmp_path):
    assert snapshot_trials(tmp_path) is None
    trial = {"trial_id": "t1", "status": "TERMINATED", "config": {"alpha": 0.5},
             "storage": {"_type": "CLOUDPICKLE_FALLBACK", "value": "80049500"}}      # never decoded
    meta = {"last_result": {"training_iteration": 3}}
    for stamp, tid in (("2026-01-01_00-00-00", "old"), ("2026-01-02_00-00-00", "t1")):
        data = [[json.dumps({**trial, "trial_id": tid}), json.dumps(meta)]]
        (tmp_path / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": data}))
    assert snapshot_trials(tmp_path) == [{"trial_id": "t1", "status": "TERMINATED", "config": {"alpha": 0.5},
                                          "last_result": {"training_iteration": 3}}]        # the newest session
