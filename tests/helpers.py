"""What several test modules share: the CLI run in this process or as a process, the 'nothing new,
nothing changed' tree of $ZSEXP_HOME, the one-line refusal contract, a sweep's MLflow runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from zsexp.models import build_model, make_config
from zsexp.tracking import client

CLI = [sys.executable, "-m", "zsexp.cli"]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZSEXP_FAULT_KILL")}
    env.update(ZSEXP_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run(home: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=cli_env(home, **env), capture_output=True, text=True, timeout=timeout,
                          cwd=home.parent)


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots``, files with their size and mtime: what 'nothing new, nothing
    changed' compares (a folder's own mtime moves with a lock file that came and went, so it is left out)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns) if p.is_file() and not p.is_symlink() else (0, 0)
    return out


def cli(home: Path, *args: str, capfd, monkeypatch) -> subprocess.CompletedProcess:
    """``zsexp ARGS`` through the CLI's entry point, in this process, on ``home``."""
    from zsexp.cli import main

    monkeypatch.setenv("ZSEXP_HOME", str(home))
    monkeypatch.chdir(home.parent)
    capfd.readouterr()
    try:
        rc = main(list(args))
    except SystemExit as exc:                 # argparse's own exits (usage errors, --help)
        rc = exc.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), rc, out, err)


def assert_refused(res: subprocess.CompletedProcess, needle: str = "") -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout and "\x1b[" not in res.stderr
    assert needle.lower() in lines[0].lower(), lines[0]


def refused_unchanged(home: Path, argv: list, needle: str, *, capfd, monkeypatch) -> subprocess.CompletedProcess:
    """``zsexp ARGV`` (an item may be a function of ``home``) refused in one line within 30 s, with
    nothing new or changed in ``home``."""
    argv = [a(home) if callable(a) else a for a in argv]
    before = tree(home)
    t0 = time.monotonic()
    res = cli(home, *argv, capfd=capfd, monkeypatch=monkeypatch)
    assert time.monotonic() - t0 < 30                  # bounded waits: refusals come within 30 s
    assert_refused(res, needle)
    assert tree(home) == before, "a refused command wrote into $ZSEXP_HOME"
    return res


def copy_home(template: Path, tmp_path: Path) -> Path:
    h = tmp_path / "copy" / "home"
    shutil.copytree(template, h, symlinks=True)
    return h


# in-range settings under which ZSCRGAN's losses turn NaN in its first iteration on synthetic-tiny
DIVERGE = ["--set", "lr_g=1.0", "--set", "lr_d=1.0", "--set", "clip=100", "--set", "rms_eps=0", "--set", "alpha=100",
           "--set", "beta=100", "--set", "em_iterations=2"]


def mlflow_runs(experiment: str):
    c = client()
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zsexp.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("zsexp.kind") == "trial"]
    return c, parents, children


def wait_for(pred, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def zscrgan_model(data, seed=0, **over):
    base = {"em_iterations": 3, "batch_size": 16}
    return build_model("zscrgan", make_config("zscrgan", data, ("test", {**base, **over})), data, seed=seed)
