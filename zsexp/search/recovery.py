"""How a killed sweep recovers before Tune restarts it: a safe, loadable snapshot, then the stores agree.

See ``docs/design/resume.md`` for the whole protocol; :func:`recover_snapshot` runs before anything
of Tune's is loaded, :func:`reconcile` before Tune restarts the trials.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna

from zsexp.errors import ZsexpError
from zsexp.search import integrity
from zsexp.search.meta import SweepMeta
from zsexp.search.storage import CALLBACK_FILE, read_progress, write_json_atomic
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
    states = sorted(d.glob("experiment_state-*.json"))
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    return {json.loads(t[0])["trial_id"] for t in state.get("trial_data", [])}


def reconcile(meta: SweepMeta, known: set[str], retry_errored: bool) -> dict[str, Any]:
    """Before Tune restarts: drop what the driver logged for trials Tune's snapshot never saw.

    Such a trial was created in the last moments before the kill (the snapshot is taken every
    controller step); Tune will not run it.  Its MLflow child run, unless finished, is deleted, and
    its entries leave the durable progress record; the searcher fails its Optuna trial on restore.
    With ``--retry-errored`` the failed trials' outcomes and markers are cleared so they run again."""
    from zsexp.search.callback import trial_marker
    from zsexp.tracking import client
    from zsexp.ui_links import sweep_filter

    d = Path(meta.dir)
    c = client(meta.tracking_uri)
    runs = c.search_runs([meta.experiment_id], filter_string=sweep_filter(meta.name), max_results=10000)
    deleted, kept_orphans = [], []
    for run in runs:
        tid = run.data.tags.get(TAG_TRIAL)
        if tid in known:
            continue
        if run.info.status == "FINISHED":
            kept_orphans.append(tid)
        else:
            c.delete_run(run.info.run_id)
            deleted.append(tid)
    progress = read_progress(d)
    if progress:
        drop = set(progress.get("runs", {})) - known - set(kept_orphans)
        if retry_errored:
            drop_failed = {t for t, o in progress.get("outcomes", {}).items() if o == "failed"}
            for t in drop_failed:
                progress["outcomes"].pop(t, None)
                try:
                    trial_marker(d, t).unlink(missing_ok=True)
                except ValueError:                    # not a trial id (an edited record): nothing to remove
                    pass
        for key in ("runs", "best_ckpt", "outcomes", "logged_step", "pending"):
            for t in drop:
                progress.get(key, {}).pop(t, None)
        write_json_atomic(d / CALLBACK_FILE, progress)
    return {"deleted_runs": deleted, "finished_unknown": kept_orphans}


def fail_running_optuna_trials(d: Path, study_name: str) -> tuple[list[str], int]:
    """A restart without a usable Tune snapshot: no trial of the study is known to Tune."""
    from zsexp.search.optuna_search import journal_storage, reconcile_study

    try:
        study = optuna.load_study(study_name=study_name, storage=journal_storage(d))
    except KeyError:
        return [], 0
    return reconcile_study(study, known=set())


