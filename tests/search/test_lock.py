"""One writer per sweep: the lock, its holder named, released by death."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import CLI, cli_env

pytestmark = pytest.mark.slow


def test_two_writers_one_sweep(home):
    """Two `search --name twin` started together: one runs the sweep, the other exits 2 naming the holder."""
    args = [*CLI, "search", "ridge", "--trials", "2", "--name", "twin", "--max-concurrent", "1"]
    procs = [subprocess.Popen(args, env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=home.parent) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [(p.returncode, o[1][-1500:]) for p, o in zip(procs, outs, strict=True)]
    loser = next(o for p, o in zip(procs, outs, strict=True) if p.returncode == 2)
    lines = [ln for ln in loser[1].splitlines() if ln.strip()]
    assert len(lines) == 1 and ("in use by" in lines[0] or "already exists" in lines[0]), loser[1]
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = c.get_experiment_by_name("zsexp-ridge-synthetic-tiny")
    runs = c.search_runs([exp.experiment_id], max_results=100)
    kinds = [r.data.tags.get("zsexp.kind") for r in runs]
    assert kinds.count("sweep") == 1 and kinds.count("trial") == 2
    assert not list((home / "sweeps").glob(".*.lock"))       # the lock leaves nothing behind


def test_lock_names_its_holder_and_is_released_by_death(tmp_path):
    """The holder is named (host, pid, since); a holder killed by SIGKILL leaves a lock the next one takes."""
    from zsexp.errors import ZsexpError
    from zsexp.search.lock import SweepLock

    code = ("import sys, time; from pathlib import Path; from zsexp.search.lock import SweepLock; "
            "SweepLock(Path(sys.argv[1]), 'held', 'search').acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ZsexpError, match=f"pid {holder.pid} on"):
        SweepLock(tmp_path, "held", "resume").acquire()
    holder.kill()
    holder.wait()
    with SweepLock(tmp_path, "held", "resume"):
        pass

