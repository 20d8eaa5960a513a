"""How a killed sweep recovers before Tune restarts it: a safe, loadable snapshot, then the stores agree.

See ``docs/design/resume.md`` for the whole protocol; :func:`recover_snapshot` runs before anything
of Tune's is loaded, :func:`reconcile` before Tune restarts the trials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna

from zsexp.errors import ZsexpError
from zsexp.meta import SweepMeta
from zsexp.search import integrity
from zsexp.search.record import PER_TRIAL, ProgressRecord, read_progress
from zsexp.search.storage import snapshot_trials
from zsexp.tags import TAG_TRIAL

STATE_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl",
               "callback-states-{}.pkl")


def recover_snapshot(d: Path, name: str, trust_storage: bool = False) -> list[str]:
    """Make Tune's newest snapshot safe and loadable before anything loads it.

    Every file Tune would unpickle must verify against the driver's signature record
    (:mod:`zsexp.search.integrity`); a planted or modified one is refused.  Tune writes its snapshot in
    a local staging directory and copies it to storage in the background, once per step; a driver
    killed during that copy leaves files cut short in storage.  A cut file is taken again from the
    staging copy when this machine still has it and its digest is the recorded one (Ray keeps it
    under its temp dir, ``session_*/artifacts/*/NAME/driver_artifacts``); otherwise the whole session's
    snapshot is set aside and Tune restores the previous one.  Without any snapshot nothing is checked:
    the fresh start deletes Tune's files unread."""
    import glob
    import shutil
    import tempfile

    if trust_storage:
        integrity.trust(d)
    ray_tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    notes: list[str] = []
    while sorted(d.glob("experiment_state-*.json")):
        cut = integrity.check(d)
        for f in cut:
            rel = f.relative_to(d).as_posix()
            staged = sorted(glob.glob(str(ray_tmp / "session_*" / "artifacts" / "*" / name / "driver_artifacts" /
                                          rel)), key=os.path.getmtime, reverse=True)
            signed = integrity.signed_digests(d).get(rel, [])
            for cand in staged:
                if integrity.digest(Path(cand)) in signed:
                    shutil.copyfile(cand, f)
                    notes.append(f"{f.name} taken from the driver's staging copy")
                    break
        cut = integrity.check(d)
        if not cut:
            return notes
        session = sorted(d.glob("experiment_state-*.json"))[-1].stem[len("experiment_state-"):]
        files = [d / t.format(session) for t in STATE_FILES if (d / t.format(session)).exists()]
        stray = [f for f in cut if f not in files]
        if stray:
            raise ZsexpError(f"{stray[0]}: cut short and not part of Tune's newest snapshot; move it away (it is not "
                             f"loaded) and resume again")
        for f in files:
            f.rename(f.with_name(f.name + ".unreadable"))
            notes.append(f"{f.name} set aside (cut short)")
    return notes


def snapshot_trial_ids(d: Path) -> set[str] | None:
    """Trial ids in the newest Tune snapshot (None: there is none)."""
    trials = snapshot_trials(d)
    return None if trials is None else {t["trial_id"] for t in trials}


def reconcile(meta: SweepMeta, known: set[str], retry_errored: bool) -> dict[str, Any]:
    """Before Tune restarts: settle what the driver logged for trials Tune's snapshot never saw.

    Tune's snapshot lags the driver's durable record (it is taken every few seconds).  A trial it never
    saw either finished since (its outcome is in the record or its finish marker exists: it is kept,
    its queued MLflow writes are replayed, and it counts towards the sweep's trials, as the Optuna
    study already counts it) or was still running (Tune will not run it again: its MLflow child run is
    ended KILLED with the reason as a tag, then deleted, the folder it left in the sweep is removed, its
    entries leave the record, and the searcher fails its Optuna trial on restore).  With
    ``--retry-errored`` the failed trials' outcomes and markers are cleared so they run again."""
    from zsexp.search.record import read_marker
    from zsexp.tracking import client, search_all_runs
    from zsexp.ui_links import sweep_filter

    d = Path(meta.dir)
    progress = read_progress(d)
    outcomes = progress.get("outcomes", {})

    def finished(tid: str) -> bool:
        """Ended as the driver (and so the searcher) saw it; a marker the trial wrote itself does not count."""
        try:
            m = read_marker(d, tid)
        except ValueError:                            # not a trial id (an edited record)
            return False
        return tid in outcomes or (m is not None and (m.get("by") == "driver" or m.get("outcome") != "failed"))
    c = client(meta.tracking_uri)
    runs = search_all_runs(c, meta.experiment_id, sweep_filter(meta.name))
    recorded = set(progress.get("runs", {})) | set(progress.get("pending", {})) | set(outcomes)
    unknown = {t for t in recorded | {r.data.tags.get(TAG_TRIAL) for r in runs} if t and t not in known}
    kept = sorted(t for t in unknown if finished(t))
    deleted = []
    for run in runs:
        tid = run.data.tags.get(TAG_TRIAL)
        if tid in unknown and tid not in kept and run.info.status not in ("FINISHED", "FAILED"):
            remove_unsaved_trial(c, d, run.info.run_id, tid)
            deleted.append(tid)
        elif tid in unknown and tid not in kept:
            kept.append(tid)                          # a finished run whose record was lost: kept
    if progress:
        _settle_record(d, progress, drop=unknown - set(kept), retry_errored=retry_errored)
    return {"deleted_runs": deleted, "finished_unknown": kept}


REMOVED_REASON = ("started just before the driver died and never saved by Tune; Tune will not run it again "
                  "and the sweep draws another trial in its place")


def remove_unsaved_trial(c: Any, d: Path, run_id: str, tid: str) -> None:
    """A trial Tune will never run again: its MLflow run is ended KILLED with the reason as a tag (so no run
    is deleted while RUNNING), then deleted; its folder in the sweep (Tune's ``<trainable>_<id>_...``) is
    removed, so nothing it wrote is mistaken for a trial of the sweep.  ``tid`` is checked as a Tune trial
    id before it names a path."""
    import shutil

    from zsexp.search.record import trial_marker
    from zsexp.tags import TAG_REMOVED

    marker = trial_marker(d, tid)                     # raises ValueError unless tid is a trial id
    c.set_tag(run_id, TAG_REMOVED, REMOVED_REASON)
    c.set_terminated(run_id, "KILLED")
    c.delete_run(run_id)
    for folder in d.glob(f"*_{tid}_*"):
        if folder.is_dir() and not folder.is_symlink() and folder.parent == d:
            shutil.rmtree(folder)
    marker.unlink(missing_ok=True)                    # a marker the trial wrote itself (it diverged)


def _settle_record(d: Path, progress: dict[str, Any], drop: set[str], retry_errored: bool) -> None:
    from zsexp.search.record import trial_marker

    if retry_errored:
        for t in [t for t, o in progress.get("outcomes", {}).items() if o == "failed"]:
            progress["outcomes"].pop(t, None)
            try:
                trial_marker(d, t).unlink(missing_ok=True)
            except ValueError:                        # not a trial id (an edited record): nothing to remove
                pass
    for key in PER_TRIAL:
        for t in drop:
            progress.get(key, {}).pop(t, None)
    ProgressRecord(d).write_snapshot(progress)


def fail_running_optuna_trials(d: Path, study_name: str) -> tuple[list[str], int]:
    """A restart without a usable Tune snapshot: no trial of the study is known to Tune."""
    from zsexp.search.optuna_search import journal_storage, reconcile_study

    try:
        study = optuna.load_study(study_name=study_name, storage=journal_storage(d))
    except KeyError:
        return [], 0
    return reconcile_study(study, known=set())


