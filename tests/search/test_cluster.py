"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`):
`zsexp search --address` runs trials on both nodes with checkpoints on the shared storage path; the
selection and ablation jobs then run on the same cluster through their job entrypoints."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _ray(*args: str, env: dict) -> None:
    exe = Path(sys.executable).with_name("ray")
    out = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]


def test_sweep_runs_on_two_nodes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="zsr", dir="/tmp")        # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats"]
    try:
        _ray("start", "--head", f"--port={port}", "--include-dashboard=false", *common, env=env)
        _ray("start", f"--address=127.0.0.1:{port}", *common, env=env)
        storage = tmp_path / "shared"
        jobs = Path(__file__).resolve().parents[2] / "jobs"
        # the sweep through its Ray job entrypoint, as `ray job submit` / a KubeRay RayJob runs it
        job_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}", "ZSEXP_MODEL": "zscrgan", "ZSEXP_SWEEP_NAME": "two",
                   "ZSEXP_TRIALS": "4", "ZSEXP_STORAGE": str(storage),
                   "ZSEXP_EXTRA": "--scheduler none --set em_iterations=4 --set updates_per_step=10 --progress-every 0"}
        out = subprocess.run([sys.executable, str(jobs / "sweep_job.py")], env=job_env, capture_output=True,
                             text=True, timeout=400)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        nodes = {json.loads(line)["node_id"] for f in glob.glob(str(storage / "two" / "*" / "result.json"))
                 for line in open(f)}
        assert len(nodes) == 2, nodes                         # both nodes ran trials
        assert len(glob.glob(str(storage / "two" / "*" / "checkpoint_*"))) == 16   # 4 trials x 4 rounds
        assert "peak concurrency 2" in out.stdout
        # then the final selection job on the same cluster, then promotion
        sel = subprocess.run([sys.executable, str(jobs / "select_job.py")],
                             env={**job_env, "ZSEXP_K": "1", "ZSEXP_SEEDS": "2"}, capture_output=True, text=True,
                             timeout=400)
        assert sel.returncode == 0, sel.stdout[-2000:] + sel.stderr[-2000:]
        assert (storage / "two" / "selection-k1-s2" / "selection.json").is_file()
        assert "@candidate" in sel.stdout
        # and the ablation of the sweep's winner through its job entrypoint: one Ray trial per row x seed
        abl = subprocess.run([sys.executable, str(jobs / "ablate_job.py")],
                             env={**job_env, "ZSEXP_FROM": "two", "ZSEXP_SWEEP_STORAGE": str(storage),
                                  "ZSEXP_STORAGE": str(tmp_path / "ablations"), "ZSEXP_VARIANTS": "no_gan",
                                  "ZSEXP_SEEDS": "1", "ZSEXP_EXTRA": ""},
                             capture_output=True, text=True, timeout=400)
        assert abl.returncode == 0, abl.stdout[-2000:] + abl.stderr[-2000:]
        done = tmp_path / "ablations" / "zscrgan-synthetic-tiny-ablation-from-two"
        assert "winner of its final selection" in abl.stdout and len(list(done.glob("ablation-*.json"))) == 2
    finally:
        subprocess.run(["pkill", "-9", "-f", temp])          # only this cluster's processes (not `ray stop`)
        shutil.rmtree(temp, ignore_errors=True)



def test_a_token_authenticated_cluster_is_joined_with_its_token_only(tmp_path):
    """Ray's control plane locked as the compose stack and the KubeRay manifests lock it: `--address`
    without the token is one line that says what is missing; with the token the sweep runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="zst", dir="/tmp")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    locked = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t0k3n-" + os.urandom(8).hex(),
              "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        _ray("start", "--head", f"--port={port}", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
             "--num-cpus=1", f"--temp-dir={temp}", "--disable-usage-stats", env=locked)
        args = [sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--trials", "1", "--address",
                f"127.0.0.1:{port}", "--scheduler", "none", "--set", "em_iterations=2", "--set", "updates_per_step=5",
                "--progress-every", "0"]
        home = {"ZSEXP_HOME": str(tmp_path / "home")}
        out = subprocess.run([*args, "--name", "open"], env={**base, **home}, capture_output=True, text=True,
                             timeout=200)
        assert out.returncode == 2, out.stdout[-1500:] + out.stderr[-1500:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("zsexp: error: cannot join the Ray cluster") and "RAY_AUTH_TOKEN" in last, last
        ok = subprocess.run([*args, "--name", "locked"], env={**locked, **home}, capture_output=True, text=True,
                            timeout=300)
        assert ok.returncode == 0 and "1 trials (1 completed" in ok.stdout, ok.stdout[-2000:] + ok.stderr[-2000:]
    finally:
        subprocess.run(["pkill", "-9", "-f", temp])
        shutil.rmtree(temp, ignore_errors=True)
