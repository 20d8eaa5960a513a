"""Bad and hostile input through the CLI: exit 2, exactly one line on stderr, no traceback, and nothing
new in $ZSEXP_HOME (sweeps, MLflow store, study); planted pickles never run.

The tables call the CLI's entry point (``zsexp.cli.main``, what the ``zsexp`` script runs) in this
process on a fresh $ZSEXP_HOME each, with stderr captured at the file-descriptor level; a few cases
run ``python -m zsexp.cli`` as a separate process to check the same contract at the process level.
Cases that need an existing sweep work on a copy of one real sweep made once for the session
(``template``)."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.helpers import assert_refused, cli, copy_home, refused_unchanged, run, tree
from zsexp.cli import main
from zsexp.tracking import client

pytestmark = pytest.mark.slow


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
    refused_unchanged(home, argv, needle, capfd=capfd, monkeypatch=monkeypatch)
    assert not (home.parent / "escape").exists() and not Path("/abs/path").exists()


def test_ray_address_is_checked_in_a_process_already_on_ray(home, ray_cluster, capfd, monkeypatch):
    """zsexp called as a library where Ray is already up: `--address` is still checked (bounded), and an
    address other than the joined cluster is refused instead of being silently ignored."""
    t0 = time.monotonic()
    res = cli(home, "search", "ridge", "--trials", "1", "--address", "127.0.0.1:9", capfd=capfd,
              monkeypatch=monkeypatch)
    assert time.monotonic() - t0 < 30
    assert_refused(res, "127.0.0.1:9")
    before = tree(home)
    other = _busy_port(home)                        # something answers there, but it is not this Ray
    assert_refused(cli(home, "search", "ridge", "--trials", "1", "--address", f"127.0.0.1:{other}",
                       capfd=capfd, monkeypatch=monkeypatch), "already connected")
    assert tree(home) == before


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
    ("address-dead", None, ["search", "ridge", "--trials", "1", "--address", "127.0.0.1:9"], "127.0.0.1:9"),
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


def test_refused_commands_leave_nothing(ray_cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)     # restored after: a refused URI must not stick
    home = Path(os.environ["ZSEXP_HOME"])
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("model: zscrgan\nparams: {lam: {type: uniform, low: 0, high: 5}}\n")
    refused = [
        ["search", "zscrgan", "--gpus", "16", "--name", "r1"],                      # budget
        ["search", "zscrgan", "--space", str(bad_space), "--name", "r2"],           # space
        ["search", "zscrgan", "--dataset", str(tmp_path / "missing.npz"), "--name", "r3"],   # data
        ["search", "zscrgan", "--tracking-uri", "http://127.0.0.1:9", "--name", "r4"],   # tracking store
        ["search", "zscrgan", "--trials", "0", "--name", "r5"],
    ]
    for args in refused:
        assert main(args) == 2, args
    err = capsys.readouterr().err
    assert "GPU" in err and "lam" in err and "missing.npz" in err and "127.0.0.1:9" in err
    sweeps = home / "sweeps"
    assert not sweeps.exists() or not any(sweeps.iterdir())
    db = home / "mlflow.db"
    if db.exists():
        c = client(f"sqlite:///{db}")
        assert not c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=10)
        assert not c.search_registered_models()
    assert main(["status", "r1"]) == 2


def test_help_into_a_closed_pipe_exits_quietly():
    """`zsexp train zscrgan --help | head`: the reader closes early; no traceback, the SIGPIPE status."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "train", "zscrgan", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                      # closed before the help is written: every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err

