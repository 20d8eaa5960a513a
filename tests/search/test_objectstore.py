"""Sweeps kept in an object store (``--storage s3://BUCKET/PREFIX``), against a real S3 server: SeaweedFS
on loopback (``tests.s3server``), whose conditional writes the writer's lease rests on.

Drivers run as processes of their own, each with its own Ray and its own working-copy folder, as on
machines that share nothing but the network: the Ray workers inherit the S3 settings from their
driver's environment, the way a cluster's nodes get them from theirs.  The first driver's local
files are deleted before the next one starts, so whatever the next one finds came from the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.helpers import assert_refused, refused_unchanged
from zsexp import objectstore
from zsexp.errors import ZsexpError
from zsexp.search.lease import Lease

TINY = ["--set", "em_iterations=2", "--set", "updates_per_step=10", "--progress-every", "0", "--scheduler", "none"]


@pytest.mark.parametrize("uri,needle", [
    ("gs://bucket/p", "scheme 'gs' is not supported"),
    ("s3://bucket", "give a prefix"),
    ("s3://bucket/", "give a prefix"),
    ("s3://bucket/a/../b", "'..' is not allowed"),
    ("s3://bucket/a//b", "is not allowed"),
    ("s3://Bad_Bucket/p", "not a valid bucket name"),
    ("s3://bucket/p?x=1", "query"),
    ("s3://bucket/p%2F..", "escape"),
])
def test_a_storage_uri_is_checked_before_use(uri, needle):
    with pytest.raises(ZsexpError) as exc:
        objectstore.parse(uri)
    assert needle in str(exc.value)


def test_an_unsupported_scheme_is_refused_in_one_line(home, capfd, monkeypatch):
    refused_unchanged(home, ["search", "zscrgan", "--storage", "gs://bucket/sweeps"], "not supported",
                      capfd=capfd, monkeypatch=monkeypatch)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_stores_are_refused_with_nothing_written(s3, home, capfd, monkeypatch):
    """Unreachable endpoint, wrong credentials, a missing bucket, no write permission, a prefix that holds
    something else, no signing key: one line each, exit 2, no object in the bucket, nothing in $ZSEXP_HOME
    (so no MLflow run either)."""
    from tests.s3server import READER

    server, bucket = s3
    server.client().put_object(Bucket=bucket, Key="other/sweeps/stranger/data.bin", Body=b"x")
    before = server.keys(bucket)
    base = ["search", "zscrgan", "--trials", "1", "--name", "s"]
    cases = [
        ({"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{_free_port()}"}, f"s3://{bucket}/sweeps", "cannot reach"),
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret-wrong-secret"}, f"s3://{bucket}/sweeps", "refused the credentials"),
        ({}, "s3://no-such-bucket-zsexp/sweeps", "does not exist"),
        ({"AWS_ACCESS_KEY_ID": READER[0], "AWS_SECRET_ACCESS_KEY": READER[1]}, f"s3://{bucket}/sweeps", "denied"),
        ({}, f"s3://{bucket}/other/sweeps", "holds objects but no zsexp sweep"),
        ({"ZSEXP_STATE_KEY": None}, f"s3://{bucket}/sweeps", "signing key given as a secret"),
        ({"ZSEXP_STATE_KEY": "short"}, f"s3://{bucket}/sweeps", "32 to 4096 characters"),
    ]
    for env, storage, needle in cases:
        with monkeypatch.context() as mp:
            for k, v in env.items():
                mp.delenv(k) if v is None else mp.setenv(k, v)
            name = "stranger" if "other" in storage else "s"
            refused_unchanged(home, [*base[:-1], name, "--storage", storage], needle, capfd=capfd, monkeypatch=mp)
        assert server.keys(bucket) == before, needle
    for cmd in (["status", "--storage", f"s3://{bucket}/sweeps"], ["status", "nope", "--storage", f"s3://{bucket}/x"]):
        with monkeypatch.context() as mp:
            mp.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_free_port()}")
            refused_unchanged(home, cmd, "cannot reach", capfd=capfd, monkeypatch=mp)


def test_one_lease_holder_and_a_bounded_takeover(s3, monkeypatch):
    """A second writer is refused while the lease is renewed; once its holder stops renewing (it died),
    the lease is taken over within TTL + the store's one-second clock, and the old holder learns it lost
    it before it writes again."""
    monkeypatch.setenv("ZSEXP_LEASE_TTL_S", "2")
    _, bucket = s3
    root = objectstore.parse(f"s3://{bucket}/sweeps")
    a = Lease(root, "x", "search").acquire()
    t0 = time.monotonic()
    with pytest.raises(ZsexpError, match="in use by `zsexp search`"):
        Lease(root, "x", "resume").acquire()              # it sees a renewal: refused
    assert time.monotonic() - t0 < 2 / 4 + 1.5
    a.check()
    a._stop.set()                                          # the holder dies: no more renewals
    a._thread.join()
    dead_at = time.monotonic()
    b = Lease(root, "x", "resume").acquire()               # watches, sees none, takes over
    waited = time.monotonic() - dead_at
    assert b.took_over is not None and 1.0 <= waited <= 2 + 1.5, waited
    with pytest.raises(ZsexpError, match="lost its lease"):
        a.check()
    b.release()
    assert objectstore.head(root, ".x.lease") is None
    c = Lease(root, "x", "select").acquire()              # given back: taken at once
    assert c.took_over is None
    c.release()


def _driver(tmp_path: Path, name: str, args: list[str], env: dict[str, str], work: Path) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, **env, "ZSEXP_WORK_DIR": str(work), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    full.pop("RAY_ADDRESS", None)
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "zsexp.cli", *args], env=full, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)


def _run(tmp_path: Path, name: str, args: list[str], env: dict[str, str], work: Path, timeout: float = 300) -> str:
    proc = _driver(tmp_path, name, args, env, work)
    rc = proc.wait(timeout=timeout)
    out = (tmp_path / f"{name}.log").read_text()
    assert rc == 0, out[-3000:]
    shutil.rmtree(work)                                   # the next driver finds nothing of this one
    return out


def _env(s3) -> dict[str, str]:
    server, _ = s3
    return {**server.env(), "ZSEXP_STATE_KEY": os.environ["ZSEXP_STATE_KEY"], "ZSEXP_HOME": os.environ["ZSEXP_HOME"]}


def _study(server, bucket: str, name: str, tmp_path: Path) -> optuna.Study:
    """The sweep's study as the store holds it (its journal, read in a scratch folder)."""
    from zsexp.search.optuna_search import journal_storage

    scratch = tmp_path / f"study-{time.monotonic_ns()}"
    scratch.mkdir()
    body = server.client().get_object(Bucket=bucket, Key=f"sweeps/{name}/optuna_journal.log")["Body"].read()
    (scratch / "optuna_journal.log").write_bytes(body)
    return optuna.load_study(study_name=name, storage=journal_storage(scratch))


def _children(name: str) -> list:
    from zsexp.tracking import client

    c = client()
    exp = c.get_experiment_by_name("zsexp-zscrgan-synthetic-tiny")
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`zsexp.sweep` = '{name}' and "
                                                            f"tags.`zsexp.kind` = 'trial'", max_results=1000)


@pytest.mark.slow
def test_killed_sweep_resumes_grows_and_is_selected_from_other_drivers(s3, tmp_path):
    """search killed -9 mid-sweep -> resume by a driver with no local file of the first -> exactly N trials,
    one finished child run each, no configuration trained twice, the study complete in the store ->
    grown by one more -> status and select from yet other drivers; every object lies under the sweep's
    prefix and the lease is given back."""
    server, bucket = s3
    env, storage, n = {**_env(s3), "ZSEXP_LEASE_TTL_S": "3"}, f"s3://{bucket}/sweeps", 3
    search = ["search", "zscrgan", "--trials", str(n), "--name", "obj", "--max-concurrent", "1", "--storage",
              storage, *TINY]
    proc = _driver(tmp_path, "search", search, {**env, "ZSEXP_FAULT_KILL": "trial_complete:2"}, tmp_path / "a")
    assert proc.wait(timeout=300) == -9, (tmp_path / "search.log").read_text()[-3000:]
    shutil.rmtree(tmp_path / "a")
    _run(tmp_path, "resume", ["resume", "obj", "--storage", storage], env, tmp_path / "b")
    runs = _children("obj")
    assert len(runs) == n and len({r.data.tags["zsexp.trial_id"] for r in runs}) == n
    assert all(r.info.status == "FINISHED" and r.data.tags["zsexp.outcome"] == "completed" for r in runs)
    assert len({json.dumps(r.data.params, sort_keys=True) for r in runs}) == n     # none trained twice
    from zsexp.tracking import client

    for r in runs:                            # each best checkpoint, fetched from the store, is an artifact
        assert client().list_artifacts(r.info.run_id, "best_checkpoint"), r.data.tags["zsexp.trial_id"]
    complete = [t for t in _study(server, bucket, "obj", tmp_path).trials if t.state.name == "COMPLETE"]
    assert len(complete) == n

    _run(tmp_path, "grow", ["resume", "obj", "--trials", str(n + 1), "--storage", storage], env, tmp_path / "c")
    assert len(_children("obj")) == n + 1
    assert len([t for t in _study(server, bucket, "obj", tmp_path).trials if t.state.name == "COMPLETE"]) == n + 1
    st = json.loads(_run(tmp_path, "status", ["status", "obj", "--json", "--storage", storage], env, tmp_path / "d"))
    assert st["meta"]["status"] == "finished" and st["meta"]["trials"] == n + 1
    _run(tmp_path, "select", ["select", "obj", "--k", "1", "--seeds", "1", "--storage", storage], env, tmp_path / "e")
    keys = server.keys(bucket)
    assert "sweeps/obj/selection-k1-s1/selection.json" in keys
    assert all(k.startswith("sweeps/obj/") for k in keys), [k for k in keys if not k.startswith("sweeps/obj/")]
    markers = [k for k in keys if k.startswith("sweeps/obj/zsexp_trials/")]
    assert len(markers) == n + 1
    assert "sweeps/.obj.lease" not in keys
    wrong = _driver(tmp_path, "wrong-key", ["status", "obj", "--storage", storage],
                    {**env, "ZSEXP_STATE_KEY": "w" * 40}, tmp_path / "g")
    assert wrong.wait(timeout=120) == 2
    line = (tmp_path / "wrong-key.log").read_text().strip().splitlines()[-1]
    assert "signed with another key" in line and f"{storage}/obj/zsexp_signatures.json" in line, line
    out = _run(tmp_path, "ablate", ["ablate", "zscrgan", "--from", "obj", "--sweep-storage", storage, "--storage",
                                    f"s3://{bucket}/ablations", "--variants", "no_gan", "--seeds", "1"], env,
               tmp_path / "f")
    assert "w/o GAN" in out and f"s3://{bucket}/ablations/" in out
    ablation = [k for k in server.keys(bucket, "ablations/") if "/ray/" not in k]
    assert sum(k.endswith(".model.pt") for k in ablation) == 2 and any(k.endswith("/table.md") for k in ablation)


@pytest.mark.slow
def test_two_drivers_on_one_sweep_one_is_refused(s3, tmp_path):
    """Two `zsexp search` of the same sweep started at the same moment on different 'machines': exactly
    one runs it; the other is refused in one line (the lease is held, or the sweep exists by then)."""
    server, bucket = s3
    env, storage = {**_env(s3), "ZSEXP_LEASE_TTL_S": "4", "ZSEXP_DATA_CACHE": str(tmp_path / "cache")}, \
        f"s3://{bucket}/sweeps"
    from zsexp.data import make_synthetic, save_npz  # the dataset too is read from the store, on each side

    save_npz(make_synthetic("synthetic-tiny", seed=5), tmp_path / "tiny5.npz")
    server.client().upload_file(str(tmp_path / "tiny5.npz"), bucket, "data/tiny5.npz")
    args = ["search", "zscrgan", "--trials", "1", "--name", "race", "--storage", storage, "--dataset",
            f"s3://{bucket}/data/tiny5.npz", *TINY]
    procs = [_driver(tmp_path, f"d{i}", args, env, tmp_path / f"w{i}") for i in range(2)]
    rcs = [p.wait(timeout=300) for p in procs]
    logs = [(tmp_path / f"d{i}.log").read_text() for i in range(2)]
    assert sorted(rcs) == [0, 2], (rcs, [x[-1500:] for x in logs])
    loser = logs[rcs.index(2)]
    assert "in use by `zsexp search`" in loser or "already exists" in loser, loser[-1500:]
    assert_refused(subprocess.CompletedProcess([], 2, "", loser.strip().splitlines()[-1] + "\n"))
    from zsexp.tracking import client

    c = client()
    exp = c.get_experiment_by_name("zsexp-zscrgan-tiny5")
    assert len(c.search_runs([exp.experiment_id], filter_string="tags.`zsexp.kind` = 'trial'")) == 1
    assert len(list((tmp_path / "cache").iterdir())) == 1            # fetched once per content, whole


def test_state_uri_is_the_default_storage(monkeypatch):
    """``$ZSEXP_STATE_URI`` (a cluster's nodes keep their state in a store) makes ``URI/sweeps`` and
    ``URI/ablations`` the default ``--storage``; a bad value is refused naming the variable."""
    from zsexp import workcopy
    from zsexp.ablation.job import ablations_root
    from zsexp.search.storage import sweeps_root

    monkeypatch.setenv("ZSEXP_STATE_URI", "s3://state-bucket/team/zsexp/")
    assert workcopy.remote(sweeps_root(None)).uri == "s3://state-bucket/team/zsexp/sweeps"
    assert workcopy.remote(ablations_root(None)).uri == "s3://state-bucket/team/zsexp/ablations"
    assert workcopy.remote(sweeps_root("/tmp/elsewhere")) is None                  # --storage still wins
    monkeypatch.setenv("ZSEXP_STATE_URI", "s3://state-bucket/../x")
    with pytest.raises(ZsexpError, match=r"\$ZSEXP_STATE_URI"):
        sweeps_root(None)
