"""Snapshot recovery: a file cut by a kill is taken again from the staging copy or set aside, never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

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



def test_a_trial_tune_never_saved_is_ended_killed_then_removed(template, tmp_path, monkeypatch):
    """Reconciliation drops a trial that was running when the driver died and that Tune's snapshot never
    saw: its MLflow run is ended KILLED with the reason before it is deleted (never deleted while RUNNING),
    the folder and marker it left in the sweep are removed, and `zsexp status` does not count it."""
    from mlflow.tracking import MlflowClient

    from tests.helpers import copy_home
    from zsexp.search.record import write_marker
    from zsexp.search.recovery import reconcile
    from zsexp.search.status import sweep_status
    from zsexp.search.storage import read_meta, snapshot_trials
    from zsexp.tags import TAG_KIND, TAG_REMOVED, TAG_SWEEP, TAG_TRIAL

    home = copy_home(template, tmp_path)
    monkeypatch.setenv("ZSEXP_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    meta = read_meta("base", None)
    d = Path(meta.dir)
    known = {t["trial_id"] for t in snapshot_trials(d)}
    c = MlflowClient(tracking_uri=meta.tracking_uri)
    run = c.create_run(meta.experiment_id, tags={TAG_SWEEP: "base", TAG_TRIAL: "deadbeef", TAG_KIND: "trial",
                                                 "mlflow.parentRunId": meta.parent_run_id})
    left = d / "train_trial_deadbeef_9_alpha=1.0_2026-12-07_00-00-00"
    (left / "checkpoint_000000").mkdir(parents=True)
    write_marker(d, "deadbeef", "failed", "diverged", by="trial")
    before = len(sweep_status("base", None)["trials"])

    rec = reconcile(meta, known, retry_errored=False)

    assert rec["deleted_runs"] == ["deadbeef"]
    gone = c.get_run(run.info.run_id)
    assert gone.info.lifecycle_stage == "deleted" and gone.info.status == "KILLED"
    assert "never saved by Tune" in gone.data.tags[TAG_REMOVED]
    assert not left.exists() and not (d / "zsexp_trials" / "deadbeef.json").exists()
    trials = sweep_status("base", None)["trials"]
    assert len(trials) == before and "deadbeef" not in {t.trial_id for t in trials}
