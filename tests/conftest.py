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
