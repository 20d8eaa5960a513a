from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "xlsa17"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own ZSEXP_HOME and no inherited tracking URI."""
    monkeypatch.setenv("ZSEXP_HOME", str(tmp_path / "zsexp_home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture()
def mlflow_ui_up():
    """``up(port)``: True once an MLflow UI answers /health on 127.0.0.1:port."""
    import urllib.request

    def up(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    return up


@pytest.fixture(scope="session")
def tiny():
    from zsexp.data import load_dataset

    return load_dataset("synthetic-tiny")


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray for every search test (4 logical GPUs to check GPU scheduling on a CPU)."""
    import ray

    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture()
def home(tmp_path) -> Path:
    """An empty $ZSEXP_HOME for a command run through ``tests.helpers.cli`` / ``run``."""
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture(scope="session")
def template(ray_cluster, tmp_path_factory) -> Path:
    """One real finished sweep ``base`` (1 trial, 1 round) with its MLflow store and signing key, made once
    on the shared Ray; tests work on copies (``tests.helpers.copy_home``)."""
    from zsexp.cli import main

    home = tmp_path_factory.mktemp("template") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZSEXP_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["search", "zscrgan", "--trials", "1", "--name", "base", "--set", "em_iterations=1",
                     "--set", "updates_per_step=10", "--progress-every", "0"]) == 0
    return home


# The compose stack test (tests/stack) builds images and starts containers: it is its own command,
# `make stack-test` (also run by .ci/run), not part of the suite.
collect_ignore_glob = [] if os.environ.get("ZSEXP_STACK_TEST") == "1" else ["stack/*"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on loopback for the object-store tests, one per test process."""
    from tests.s3server import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture()
def s3(s3_server, monkeypatch, request):
    """The S3 server's settings in this process's environment (admin keys, a signing key given as a
    secret) and a fresh bucket for this test; yields ``(server, bucket)``."""
    import re

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("ZSEXP_STATE_KEY", "k" * 40)
    bucket = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + os.urandom(3).hex()
    s3_server.make_bucket(bucket)
    yield s3_server, bucket
