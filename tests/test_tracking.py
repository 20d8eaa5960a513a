"""A real `mlflow server` (basic-auth app, SQLite backend, proxied artifacts) on loopback.

A sweep logs to it over HTTP with MLFLOW_TRACKING_USERNAME / PASSWORD; the runs are checked
through the REST API; without credentials zsexp prints one clear line and exits 2; the password
never appears in params, tags, sweep metadata, artifacts or the printed logs."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from zsexp.cli import main
from zsexp.search.record import read_progress

pytestmark = pytest.mark.slow


PASSWORD = "zs-Secret-pw-8471"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, path: str, body: dict | None = None, auth: bool = True) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if auth:
        token = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


@pytest.fixture
def auth_server(tmp_path):
    port = _free_port()
    ini = tmp_path / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
                   f"admin_username = admin\nadmin_password = {PASSWORD}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        raise AssertionError("mlflow server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    log.close()


def test_sweep_against_authenticated_server(ray_cluster, auth_server, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    # no credentials: refused by the server, one clear line, exit 2, nothing started
    assert main(["search", "zscrgan", "--tracking-uri", auth_server, "--trials", "1", "--name", "noauth"]) == 2
    err = capsys.readouterr().err
    assert "refused the credentials (401)" in err and "MLFLOW_TRACKING_USERNAME" in err and "Traceback" not in err
    assert _request(auth_server, "/api/2.0/mlflow/experiments/search", {"max_results": 5}, auth=False)[0] == 401

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert main(["search", "zscrgan", "--tracking-uri", auth_server, "--trials", "2", "--name", "authed",
                 "--set", "em_iterations=3", "--set", "updates_per_step=10", "--progress-every", "0"]) == 0
    printed = capsys.readouterr()
    status, body = _request(auth_server, "/api/2.0/mlflow/experiments/search", {"max_results": 50})
    exp = next(e for e in body["experiments"] if e["name"] == "zsexp-zscrgan-synthetic-tiny")
    status, runs = _request(auth_server, "/api/2.0/mlflow/runs/search",
                            {"experiment_ids": [exp["experiment_id"]], "max_results": 100})
    assert status == 200
    kinds = sorted(t["value"] for r in runs["runs"] for t in r["data"].get("tags", []) if t["key"] == "zsexp.kind")
    assert kinds == ["sweep", "trial", "trial"]
    # the password is nowhere: params, tags, metadata on disk, artifacts, printed output
    blob = json.dumps(runs)
    from zsexp.search.storage import read_meta

    meta_dir = Path(read_meta("authed", None).dir)
    blob += "".join(p.read_text(errors="ignore") for p in meta_dir.glob("*.json"))
    blob += "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "server-artifacts").rglob("*")
                    if p.is_file())
    blob += printed.out + printed.err
    assert PASSWORD not in blob
    assert any(p.name == "model.pt" for p in (tmp_path / "server-artifacts").rglob("*"))   # artifacts proxied


def _start_server(tmp_path, port: int, log_name: str) -> subprocess.Popen:
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'plain.db'}",
         "--artifacts-destination", str(tmp_path / "plain-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_tracking_outage_mid_sweep_loses_nothing(ray_cluster, tmp_path, monkeypatch, capsys):
    """The server dies after the first trial finishes and comes back a few seconds later: trials keep
    running, their MLflow writes are queued, and every metric of every round ends up in the store."""
    import threading

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [_start_server(tmp_path, port, "s1.log")]
    t0 = time.time()
    while not _healthy(url):
        assert time.time() - t0 < 120, "server did not start"
        time.sleep(0.5)
    home = Path(os.environ["ZSEXP_HOME"])
    outage = {}

    def kill_and_restart():
        t = time.time()
        while time.time() - t < 240:
            if read_progress(home / "sweeps" / "outage").get("outcomes"):
                break
            time.sleep(0.2)
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        outage["down"] = time.time()
        time.sleep(1)              # the new server's start-up (seconds, longer on a loaded machine) is the outage
        procs.append(_start_server(tmp_path, port, "s2.log"))
        while not _healthy(url):
            time.sleep(0.3)
        outage["up"] = time.time()

    killer = threading.Thread(target=kill_and_restart, daemon=True)
    killer.start()
    try:
        assert main(["search", "zscrgan", "--tracking-uri", url, "--trials", "3", "--name", "outage",
                     "--max-concurrent", "1", "--scheduler", "none", "--set", "em_iterations=12",
                     "--set", "em_schedule=fixed", "--set", "updates_per_step=150", "--progress-every", "0"]) == 0
        killer.join(timeout=120)
        out = capsys.readouterr().out
        assert "down" in outage and "up" in outage
        assert "tracking writes are queued" in out and "MLflow is back" in out
        from mlflow.tracking import MlflowClient

        c = MlflowClient(tracking_uri=url)
        exp = c.get_experiment_by_name("zsexp-zscrgan-synthetic-tiny")
        runs = c.search_runs([exp.experiment_id])
        trials = [r for r in runs if r.data.tags.get("zsexp.kind") == "trial"]
        assert len(trials) == 3
        for r in trials:
            steps = sorted(m.step for m in c.get_metric_history(r.info.run_id, "val_precision_at_50"))
            assert steps == list(range(1, 13)), (r.data.tags["zsexp.trial_id"], steps)
            assert r.info.status == "FINISHED" and r.data.tags["zsexp.outcome"] == "completed"
        parent = next(r for r in runs if r.data.tags.get("zsexp.kind") == "sweep")
        assert parent.info.status == "FINISHED"
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)


def test_tracking_uri_credentials_are_redacted(monkeypatch):
    from zsexp.tracking import credentials_from_uri, redact_uri

    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert redact_uri("https://bob:pw%40x@mlflow.example:5000/p") == "https://mlflow.example:5000/p"
    assert redact_uri("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert credentials_from_uri("http://bob:pw%40x@127.0.0.1:5000") == "http://127.0.0.1:5000"
    import os

    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bob" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw@x"

