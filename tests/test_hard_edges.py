"""Bad and hostile input through the CLI: exit 2, exactly one line on stderr, no traceback, and nothing
new in $ZSEXP_HOME (sweeps, MLflow store, study) -- plus the planted-pickle and two-writer cases.

The tables call the CLI's entry point (``zsexp.cli.main``, what the ``zsexp`` script runs) in this
process on a fresh $ZSEXP_HOME each, with stderr captured at the file-descriptor level; a few cases
run ``python -m zsexp.cli`` as a separate process to check the same contract at the process level,
and the two-writer and SIGTERM cases need real processes anyway.  Cases that need an existing sweep
work on a copy of one real sweep made once for the module (``template``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "zsexp.cli"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZSEXP_FAULT_KILL")}
    env.update(ZSEXP_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run(home: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=_env(home, **env), capture_output=True, text=True, timeout=timeout,
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


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One real finished sweep ``base`` (1 trial, 1 round) with its MLflow store and signing key."""
    home = tmp_path_factory.mktemp("template") / "home"
    home.mkdir()
    res = run(home, "search", "zscrgan", "--trials", "1", "--name", "base", "--set", "em_iterations=1",
              timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return home


@pytest.fixture()
def home(tmp_path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def copy_home(template: Path, tmp_path: Path) -> Path:
    h = tmp_path / "copy" / "home"
    shutil.copytree(template, h, symlinks=True)
    return h


# --------------------------------------------------------------------------- table: fresh home
def _binary(home: Path) -> str:
    p = home.parent / "blob.yaml"
    p.write_bytes(bytes(range(256)) * 8)
    return str(p)


def _bad_sampler(home: Path) -> str:
    src = Path(__file__).resolve().parents[1] / "search_spaces" / "zscrgan.yaml"
    p = home.parent / "space.yaml"
    p.write_text(src.read_text().replace("sampler: {name: tpe", "sampler: {name: tpe, no_such_option: 3"))
    assert "no_such_option" in p.read_text()
    return str(p)


def _file(home: Path) -> str:
    p = home.parent / "a-file"
    p.write_text("x")
    return str(p)


def _random_pt(home: Path) -> str:
    p = home.parent / "random.pt"
    p.write_bytes(os.urandom(4096))
    return str(p)


def _crafted_pt(home: Path) -> str:
    import torch

    p = home.parent / "crafted.pt"
    torch.save({"model": {"family": "zscrgan", "config": {}}, "dataset": "synthetic-tiny"}, p)
    return str(p)


def _busy_port(home: Path) -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    _busy_port.sock = sock            # kept open for the case's lifetime
    return str(sock.getsockname()[1])


FRESH = [
    ("name-dotdot", ["search", "zscrgan", "--name", "../escape"], "not allowed"),
    ("name-abs", ["search", "zscrgan", "--name", "/abs/path"], "not allowed"),
    ("name-quote", ["search", "zscrgan", "--name", "it's"], "not allowed"),
    ("name-long", ["search", "zscrgan", "--name", "x" * 300], "at most"),
    ("name-empty", ["search", "zscrgan", "--name", ""], "empty"),
    ("name-dot", ["search", "zscrgan", "--name", ".hidden"], "not allowed"),
    ("cpus-0", ["search", "zscrgan", "--cpus-per-trial", "0"], "--cpus-per-trial"),
    ("cpus-neg", ["search", "zscrgan", "--cpus-per-trial", "-1"], "--cpus-per-trial"),
    ("concurrent-neg", ["search", "zscrgan", "--max-concurrent", "-1"], "--max-concurrent"),
    ("keep-0", ["search", "zscrgan", "--keep-checkpoints", "0"], "--keep-checkpoints"),
    ("storage-proc", ["search", "zscrgan", "--storage", "/proc/nope"], "--storage"),
    ("trials-huge", ["search", "zscrgan", "--trials", "1000000000"], "--trials"),
    ("trials-0", ["search", "zscrgan", "--trials", "0"], "--trials"),
    ("trials-text", ["search", "zscrgan", "--trials", "abc"], "invalid int"),
    ("gpus-neg", ["search", "zscrgan", "--gpus", "-1"], "--gpus"),
    ("gpus-nan", ["search", "zscrgan", "--gpus", "nan"], "--gpus"),
    ("gpt-0", ["search", "zscrgan", "--gpus-per-trial", "0"], "--gpus-per-trial"),
    ("gpt-no-gpus", ["search", "zscrgan", "--gpus-per-trial", "1.5"], "--gpus-per-trial"),
    ("space-binary", ["search", "zscrgan", "--space", _binary], "blob.yaml"),
    ("space-missing", ["search", "zscrgan", "--space", "/nonexistent.yaml"], "not found"),
    ("space-sampler-option", ["search", "zscrgan", "--space", _bad_sampler], "sampler"),
    ("set-broken", ["search", "zscrgan", "--set", "g_hidden=[1,"], "g_hidden"),
    ("set-unknown", ["search", "zscrgan", "--set", "no_such_key=1"], "no_such_key"),
    ("tracking-scheme", ["search", "zscrgan", "--tracking-uri", "foo://bar"], "scheme"),
    ("tracking-dead", ["search", "zscrgan", "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ("dataset-missing", ["search", "zscrgan", "--dataset", "/nonexistent/data.npz"], "nonexistent"),
    ("device-bad", ["search", "zscrgan", "--device", "tpu"], "--device"),
    ("train-config-binary", ["train", "zscrgan", "--config", _binary], "blob.yaml"),
    ("train-out-file", ["train", "ridge", "--out", _file], "a-file"),
    ("evaluate-random", ["evaluate", _random_pt], "random.pt"),
    ("evaluate-crafted", ["evaluate", _crafted_pt], "crafted.pt"),
    ("evaluate-missing", ["evaluate", "/nonexistent.pt"], "not found"),
    ("promote-bad-name", ["promote", "bad name!"], "not allowed"),
    ("promote-bad-alias", ["promote", "m", "--alias", "bad alias!"], "alias"),
    ("promote-latest", ["promote", "m", "--alias", "latest"], "reserved"),
    ("promote-no-store", ["promote", "nosuch", "--list"], "no mlflow store"),
    ("status-escape", ["status", "../escape"], "not allowed"),
    ("status-missing", ["status", "nosuch"], "no sweep"),
    ("resume-missing", ["resume", "nosuch"], "no sweep"),
    ("select-missing", ["select", "nosuch"], "no sweep"),
    ("select-k-0", ["select", "nosuch", "--k", "0"], "--k"),
    ("ui-port-range", ["ui", "--port", "99999"], "--port"),
    ("ui-port-taken", ["ui", "--port", _busy_port], "--port"),
    ("ui-dead-server", ["ui", "--tracking-uri", "http://127.0.0.1:9"], "127.0.0.1:9"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("case", FRESH, ids=[c[0] for c in FRESH])
def test_refused_on_a_fresh_home(case, home, capfd, monkeypatch):
    _, argv, needle = case
    argv = [a(home) if callable(a) else a for a in argv]
    before = tree(home)
    t0 = time.monotonic()
    res = cli(home, *argv, capfd=capfd, monkeypatch=monkeypatch)
    assert time.monotonic() - t0 < 30                  # bounded waits: refusals come within 30 s
    assert_refused(res, needle)
    assert tree(home) == before, "a refused command wrote into $ZSEXP_HOME"
    assert not (home.parent / "escape").exists() and not Path("/abs/path").exists()


def test_unreachable_ray_address_fails_fast(home, capfd, monkeypatch):
    t0 = time.monotonic()
    res = cli(home, "search", "ridge", "--trials", "1", "--address", "127.0.0.1:9", capfd=capfd,
              monkeypatch=monkeypatch)
    assert time.monotonic() - t0 < 30
    assert_refused(res, "127.0.0.1:9")


# --------------------------------------------------------------------------- table: an existing sweep
def _corrupt_meta(h: Path) -> None:
    (h / "sweeps" / "base" / "zsexp_sweep.json").write_text("{not json")


def _meta_dataset_string(h: Path) -> None:
    import json

    p = h / "sweeps" / "base" / "zsexp_sweep.json"
    meta = json.loads(p.read_text())
    meta["trial_meta"] = "oops"
    p.write_text(json.dumps(meta))


def _meta_renamed(h: Path) -> None:
    shutil.move(h / "sweeps" / "base", h / "sweeps" / "other")


def _no_snapshot(h: Path) -> None:
    d = h / "sweeps" / "base"
    for f in d.iterdir():
        if f.name != "zsexp_sweep.json":
            shutil.rmtree(f) if f.is_dir() else f.unlink()


def _link_out(h: Path) -> None:
    outside = h.parent / "outside"
    shutil.move(h / "sweeps" / "base", outside)
    (h / "sweeps" / "base").symlink_to(outside)


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(pattern: str):
    def plant(h: Path) -> None:
        marker = h.parent / "PWNED"
        for p in (h / "sweeps" / "base").glob(pattern):
            p.write_bytes(pickle.dumps(Evil(str(marker))))
    return plant


def _plant_json(h: Path) -> None:
    import json

    marker = h.parent / "PWNED"
    blob = pickle.dumps(Evil(str(marker))).hex()
    for p in (h / "sweeps" / "base").glob("experiment_state-*.json"):
        state = json.loads(p.read_text())
        state["runner_data"]["_planted"] = {"_type": "CLOUDPICKLE_FALLBACK", "value": blob}
        p.write_text(json.dumps(state))


def _world_writable(h: Path) -> None:
    for p in (h / "sweeps" / "base").glob("searcher-state-*.pkl"):
        p.chmod(0o666)


def _tamper_signatures(h: Path) -> None:
    import json

    p = h / "sweeps" / "base" / "zsexp_signatures.json"
    rec = json.loads(p.read_text())
    rec["files"]["searcher-state-x.pkl"] = ["0" * 64]
    p.write_text(json.dumps(rec))


EXISTING = [
    ("status-corrupt-meta", _corrupt_meta, ["status", "base"], "unreadable"),
    ("resume-corrupt-meta", _corrupt_meta, ["resume", "base"], "unreadable"),
    ("select-corrupt-meta", _corrupt_meta, ["select", "base"], "unreadable"),
    ("resume-meta-field-type", _meta_dataset_string, ["resume", "base"], "trial_meta"),
    ("status-moved-meta", _meta_renamed, ["status", "other"], "describes sweep"),
    ("select-before-snapshot", _no_snapshot, ["select", "base", "--k", "1", "--seeds", "1"], "resume"),
    ("status-link-out", _link_out, ["status", "base"], "link"),
    ("search-existing-name", None, ["search", "zscrgan", "--name", "base"], "already exists"),
    ("resume-planted-searcher", _plant("searcher-state-*.pkl"), ["resume", "base", "--retry-errored"], "searcher"),
    ("resume-planted-tuner", _plant("tuner.pkl"), ["resume", "base"], "tuner.pkl"),
    ("resume-planted-callback", _plant("callback-states-*.pkl"), ["resume", "base"], "callback-states"),
    ("resume-planted-json", _plant_json, ["resume", "base"], "experiment_state"),
    ("status-planted-json", _plant_json, ["status", "base"], "experiment_state"),
    ("select-planted-searcher", _plant("searcher-state-*.pkl"), ["select", "base"], "searcher"),
    ("resume-world-writable", _world_writable, ["resume", "base"], "writable"),
    ("resume-tampered-record", _tamper_signatures, ["resume", "base"], "zsexp_signatures.json"),
    ("select-bad-register-as", None, ["select", "base", "--register-as", "a/b"], "not allowed"),
]


@pytest.mark.parametrize("case", EXISTING, ids=[c[0] for c in EXISTING])
def test_refused_on_an_existing_sweep(case, template, tmp_path, capfd, monkeypatch):
    _, setup, argv, needle = case
    h = copy_home(template, tmp_path)
    if setup:
        setup(h)
    before = tree(h, template)
    res = cli(h, *argv, capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, needle)
    assert not (h.parent / "PWNED").exists(), "a planted pickle ran"
    assert tree(h, template) == before, "a refused command wrote into $ZSEXP_HOME or the sweep's MLflow store"


PROCESS_CASES = [
    ("name-dotdot", None, ["search", "zscrgan", "--name", "../escape"], "not allowed"),
    ("resume-planted-searcher", _plant("searcher-state-*.pkl"), ["resume", "base"], "searcher"),
    ("evaluate-random", None, ["evaluate", "/dev/urandom"], "urandom"),
]


@pytest.mark.parametrize("case", PROCESS_CASES, ids=[c[0] for c in PROCESS_CASES])
def test_refusal_as_a_process(case, template, tmp_path):
    """The same contract seen from outside: `python -m zsexp.cli` exits 2 with one stderr line."""
    _, setup, argv, needle = case
    h = copy_home(template, tmp_path)
    if setup:
        setup(h)
    before = tree(h, template)
    assert_refused(run(h, *argv), needle)
    assert not (h.parent / "PWNED").exists() and not (h.parent / "escape").exists()
    assert tree(h, template) == before


def test_trust_storage_accepts_a_moved_sweep(template, tmp_path, capfd, monkeypatch):
    """A sweep signed with another key (another user or machine) is refused, then accepted explicitly."""
    h = copy_home(template, tmp_path)
    (h / "keys" / "sweep-state.key").unlink()               # this "user" has a key of their own
    assert_refused(cli(h, "status", "base", capfd=capfd, monkeypatch=monkeypatch), "--trust-storage")
    res = cli(h, "status", "base", "--trust-storage", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr
    assert cli(h, "status", "base", capfd=capfd, monkeypatch=monkeypatch).returncode == 0   # now signed as ours


# --------------------------------------------------------------------------- concurrency
def test_two_writers_one_sweep(home):
    """Two `search --name twin` started together: one runs the sweep, the other exits 2 naming the holder."""
    args = [*CLI, "search", "ridge", "--trials", "2", "--name", "twin", "--max-concurrent", "1"]
    procs = [subprocess.Popen(args, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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


# --------------------------------------------------------------------------- failures after the start
# in-range settings under which ZSCRGAN's losses turn NaN in its first iteration on synthetic-tiny
DIVERGE = ["--set", "lr_g=1.0", "--set", "lr_d=1.0", "--set", "clip=100", "--set", "rms_eps=0", "--set", "alpha=100",
           "--set", "beta=100", "--set", "em_iterations=2"]


def test_every_trial_failing_exits_nonzero_and_closes_the_parent(home, ray_cluster, capfd, monkeypatch):
    """In-range settings that diverge fail every trial: the sweep exits 2 with a summary line, its MLflow
    parent run is FAILED (never RUNNING) and `zsexp status` says failed."""
    res = cli(home, "search", "zscrgan", "--trials", "1", "--name", "nan", *DIVERGE, capfd=capfd,
              monkeypatch=monkeypatch)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("zsexp: error")]
    assert len(lines) == 1 and "every one of the sweep's 1 trials failed" in lines[0]
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = c.get_experiment_by_name("zsexp-zscrgan-synthetic-tiny")
    parent = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("zsexp.kind") == "sweep"][0]
    assert parent.info.status == "FAILED" and "failed" in parent.data.tags["zsexp.error"]
    st = cli(home, "status", "nan", capfd=capfd, monkeypatch=monkeypatch)
    assert "status failed" in st.stdout


def test_diverging_train_refuses_and_leaves_no_folder(home, capfd, monkeypatch):
    out = home.parent / "runs" / "nan"
    res = cli(home, "train", "zscrgan", *DIVERGE, "--out", str(out), capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "diverged")
    assert not (home.parent / "runs").exists()


# --------------------------------------------------------------------------- ridge sweeps select and promote
def test_ridge_sweep_selects_and_promotes(home, ray_cluster, capfd, monkeypatch):
    def z(*args):
        return cli(home, *args, capfd=capfd, monkeypatch=monkeypatch)
    assert z("search", "ridge", "--trials", "2", "--name", "rs").returncode == 0
    res = z("select", "rs", "--k", "1", "--seeds", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "registered zsexp-ridge-synthetic-tiny version 1" in res.stdout
    res = z("promote", "zsexp-ridge-synthetic-tiny")
    assert res.returncode == 0 and "is now @champion" in res.stdout, res.stderr


# --------------------------------------------------------------------------- SIGTERM
def test_sigterm_stops_a_sweep_resumably(home):
    """SIGTERM (a cluster scheduler's stop) ends `search` like Ctrl-C: exit 130, the sweep `interrupted`,
    and `zsexp resume` completes it to exactly the asked number of trials."""
    import signal

    args = [*CLI, "search", "ridge", "--trials", "3", "--name", "term", "--max-concurrent", "1",
            "--progress-every", "0"]
    proc = subprocess.Popen(args, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=home.parent)
    seen = []
    for line in proc.stdout:                 # wait for the first finished trial, then stop it
        seen.append(line)
        if "done 1" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, (seen[-5:], out[-1500:], err[-1500:])
    assert "Traceback" not in err
    st = run(home, "status", "term", "--json")
    import json

    assert json.loads(st.stdout)["meta"]["status"] == "interrupted"
    res = run(home, "resume", "term", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    trials = json.loads(run(home, "status", "term", "--json").stdout)["trials"]
    assert len(trials) == 3 and all(t["status"] == "TERMINATED" for t in trials)
