"""Snapshot recovery: a file cut by a kill is taken again from the staging copy or set aside, never unpickled."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_a_snapshot_cut_by_the_kill_is_repaired(tmp_path, monkeypatch):
    """Tune copies its snapshot to storage in the background every step; a kill mid-copy truncates a
    file.  It is taken again from the driver's staging copy when that copy carries the recorded digest,
    or the session is set aside -- and the cut file is never unpickled to find out."""
    import ray.cloudpickle as cloudpickle

    from zsexp.search import integrity
    from zsexp.search.recovery import recover_snapshot

    d = tmp_path / "sweeps" / "s"
    d.mkdir(parents=True)
    for session in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (d / f"experiment_state-{session}.json").write_text(json.dumps({"trial_data": []}))
        for name in ("search_gen_state-{}.json", "searcher-state-{}.pkl", "callback-states-{}.pkl"):
            (d / name.format(session)).write_bytes(cloudpickle.dumps({"session": session}))
    integrity.record(d, {p.name: p for p in d.iterdir()})      # what the driver signs as it writes them
    newest = d / "callback-states-2026-01-02_00-00-00.pkl"
    good = newest.read_bytes()
    newest.write_bytes(good[: len(good) // 2])                # the copy the kill cut short
    staging = tmp_path / "raytmp" / "ray" / "session_x" / "artifacts" / "t" / "s" / "driver_artifacts"
    staging.mkdir(parents=True)
    (staging / newest.name).write_bytes(good)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "raytmp"))
    notes = recover_snapshot(d, "s")
    assert newest.read_bytes() == good and "staging" in notes[0]
    newest.write_bytes(b"")                                   # no staging copy left: set the session aside
    (staging / newest.name).unlink()
    notes = recover_snapshot(d, "s")
    assert not (d / "experiment_state-2026-01-02_00-00-00.json").exists()
    assert (d / "experiment_state-2026-01-01_00-00-00.json").exists() and len(notes) == 4
    assert integrity.check(d) == []                           # what is left verifies

