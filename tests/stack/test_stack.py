"""The compose stack for real (`make stack-test`): images built here, every service healthy, a sweep, the
selection and an ablation submitted to the Ray head's job API with trials on two worker containers,
promotion, read-back from another container, faults, the locks, and the figures of docs/stack.md.

Runs in the order written (one stack for the module); each test builds on the ones before it.  The
stack gets its own compose project, ports and freshly generated secrets, and is removed at the end.
Needs a Docker engine (`make engine`); `tests/conftest.py` collects this folder only for
`make stack-test` (ZSEXP_STACK_TEST=1)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docker"))

import stack  # noqa: E402

PROJECT = "zsexpstacktest"
MODEL_NAME = "zsexp-zscrgan-synthetic-tiny"
SWEEP = "stack-sweep"
TRIALS = 8
# narrow and short: a trial is a few seconds on a 2-core machine, long enough to be killed mid-way
ROUNDS = 10                                   # em_iterations: one reported round per E-M iteration
SWEEP_EXTRA = (f"--scheduler none --set em_iterations={ROUNDS} --set updates_per_step=10 --progress-every 0 "
               "--max-concurrent 2 --seed 3")
RAY = str(Path(sys.executable).with_name("ray"))
FIGURES: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sh(*cmd: str, timeout: float = 300, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert out.returncode == 0, f"{' '.join(cmd)[:200]}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


class Stack:
    def __init__(self, tmp: Path):
        self.env_file = tmp / "stack.env"
        self.ports = {"MLFLOW_HOST_PORT": _free_port(), "RAY_DASHBOARD_HOST_PORT": _free_port(),
                      "RAY_GCS_HOST_PORT": _free_port()}
        stack.write_env(self.env_file, stack.fresh_env(
            **{k: str(v) for k, v in self.ports.items()}, RAY_WORKERS="2", RAY_WORKER_CPUS="1",
            RAY_OBJECT_STORE_MEMORY="300000000"))
        self.env = stack.read_env(self.env_file)
        self.mlflow = f"http://127.0.0.1:{self.ports['MLFLOW_HOST_PORT']}"
        self.jobs = f"http://127.0.0.1:{self.ports['RAY_DASHBOARD_HOST_PORT']}"

    def compose(self, *args: str) -> subprocess.CompletedProcess:
        return stack.compose(PROJECT, self.env_file, *args)

    def containers(self, service: str, all_: bool = False) -> list[str]:
        out = _sh("docker", "ps", *(["-a"] if all_ else []), "-q", "--filter",
                  f"label=com.docker.compose.project={PROJECT}",
                  "--filter", f"label=com.docker.compose.service={service}")
        return sorted(out.stdout.split())

    def exec(self, service: str, *cmd: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return _sh("docker", "exec", self.containers(service)[0], *cmd, timeout=timeout, check=check)

    def client(self, script: str, timeout: float = 300) -> str:
        """Python in a separate client container on the stack's internal network, where MLflow and the object
        store are (zsexp's image, no Ray of its own)."""
        values = {"MLFLOW_TRACKING_URI": "http://mlflow:5000",
                  "MLFLOW_TRACKING_USERNAME": self.env["MLFLOW_ADMIN_USERNAME"],
                  "MLFLOW_TRACKING_PASSWORD": self.env["MLFLOW_ADMIN_PASSWORD"],
                  "AWS_ACCESS_KEY_ID": self.env["MINIO_ROOT_USER"],
                  "AWS_SECRET_ACCESS_KEY": self.env["MINIO_ROOT_PASSWORD"], "MLFLOW_BUCKET": self.env["MLFLOW_BUCKET"],
                  "AWS_ENDPOINT_URL_S3": "http://minio:9000", "ZSEXP_BUCKET": self.env["ZSEXP_BUCKET"],
                  "ZSEXP_STATE_URI": f"s3://{self.env['ZSEXP_BUCKET']}", "ZSEXP_STATE_KEY": self.env["ZSEXP_STATE_KEY"]}
        names = [arg for k in values for arg in ("-e", k)]      # `-e NAME`: the value travels by environment
        out = _sh("docker", "run", "--rm", "--network", f"{PROJECT}_backend", *names,
                  stack.ZSEXP_IMAGE, "python", "-c", script, timeout=timeout, env={**os.environ, **values})
        return out.stdout

    def state_keys(self, prefix: str) -> list[str]:
        """Every object of zsexp's bucket under ``prefix``, listed from the client container."""
        out = self.client(f"""
import json, os, boto3
s3 = boto3.client("s3", endpoint_url="http://minio:9000", region_name="us-east-1")
pages = s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["ZSEXP_BUCKET"], Prefix={prefix!r})
print(json.dumps([o["Key"] for p in pages for o in p.get("Contents", []) if not o["Key"].endswith("/")]))
""")
        return json.loads(out.strip().splitlines()[-1])

    def state_text(self, key: str) -> str:
        return self.client(f"""
import os, boto3
s3 = boto3.client("s3", endpoint_url="http://minio:9000", region_name="us-east-1")
print(s3.get_object(Bucket=os.environ["ZSEXP_BUCKET"], Key={key!r})["Body"].read().decode())
""")

    def ray_env(self, token: str | None = "ok") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        if token == "ok":
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.env["RAY_AUTH_TOKEN"])
        elif token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        return env

    def submit(self, script: str, env_vars: dict[str, str], sid: str) -> None:
        _sh(RAY, "job", "submit", "--address", self.jobs, "--submission-id", sid, "--no-wait",
            "--runtime-env-json", json.dumps({"env_vars": env_vars}), "--", "python", f"/opt/zsexp/jobs/{script}",
            env=self.ray_env())

    def job_status(self, sid: str) -> str:
        out = _sh(RAY, "job", "status", "--address", self.jobs, sid, env=self.ray_env())
        end = re.search(rf"Job '{re.escape(sid)}' (succeeded|failed|was stopped|stopped)", out.stdout + out.stderr)
        return end.group(1).replace("was ", "").upper() if end else "RUNNING"

    def wait_job(self, sid: str, timeout: float = 600) -> str:
        t0 = time.time()
        while time.time() - t0 < timeout:
            st = self.job_status(sid)
            if st in ("SUCCEEDED", "FAILED", "STOPPED"):
                logs = _sh(RAY, "job", "logs", "--address", self.jobs, sid, env=self.ray_env()).stdout
                assert st == "SUCCEEDED", f"job {sid} {st}:\n{_zsexp_lines(logs)[-4000:]}"
                return logs
            time.sleep(2)
        raise AssertionError(f"job {sid} still running after {timeout}s")

    def rest(self, path: str, body: dict | None = None, auth: bool = True) -> dict:
        req = urllib.request.Request(self.mlflow + path, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
        if auth:
            cred = f"{self.env['MLFLOW_ADMIN_USERNAME']}:{self.env['MLFLOW_ADMIN_PASSWORD']}".encode()
            req.add_header("Authorization", "Basic " + base64.b64encode(cred).decode())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def sweep_runs(self, sweep: str) -> list[dict]:
        exp = self.rest(f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={MODEL_NAME}")["experiment"]
        body = {"experiment_ids": [exp["experiment_id"]], "max_results": 1000,
                "filter": f"tags.`zsexp.sweep` = '{sweep}' and tags.`zsexp.kind` = 'trial'"}
        return self.rest("/api/2.0/mlflow/runs/search", body).get("runs", [])


@pytest.fixture(scope="module")
def st():
    if not stack.engine_ok():
        pytest.fail("no Docker engine answers: run `make engine` (Debian's docker.io, dockerd started)")
    tmp = Path(tempfile.mkdtemp(prefix="zsexp-stack-"))
    s = Stack(tmp)
    try:
        yield s
    finally:
        subprocess.run(stack.compose_cmd() + ["-p", PROJECT, "--env-file", str(s.env_file),
                                              "-f", str(stack.DOCKER / "compose.yaml"),
                                              "-f", str(stack.DOCKER / "compose.local.yaml"),
                                              "down", "--volumes", "--timeout", "5"],
                       capture_output=True, cwd=stack.DOCKER, timeout=300)
        stack.unguard_bridges(PROJECT)
        shutil.rmtree(tmp, ignore_errors=True)
        if FIGURES:
            print("\nstack test figures:")
            for k, v in FIGURES.items():
                print(f"  {k:48s} {v}")
            out = os.environ.get("ZSEXP_STACK_FIGURES")
            if out:
                Path(out).write_text(json.dumps(FIGURES, indent=1) + "\n")


def _layers(image: str) -> list[str]:
    return json.loads(_sh("docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout)


def test_images_build_with_layer_cache(st):
    had = stack.image_exists(stack.ZSEXP_IMAGE)
    times = stack.build_all()
    FIGURES["build, this run (s)"] = (f"{sum(times.values()):.1f} "
                                      f"({'layers cached' if had else 'cold: no image before'})")
    for name in (stack.DEBIAN_IMAGE, stack.PYTHON_IMAGE, stack.POSTGRES_IMAGE, stack.OBJECTSTORE_IMAGE,
                 stack.ZSEXP_IMAGE):
        FIGURES[f"image size {name} (MB)"] = f"{stack.image_size_mb(name):.0f}"
    # a one-line code change rebuilds the zsexp code layers only: the base and dependency layers are shared
    with tempfile.TemporaryDirectory() as ctx:
        for part in ("pyproject.toml", "README.md", "zsexp", "search_spaces", "jobs", "docker", ".dockerignore"):
            src = ROOT / part
            (shutil.copytree(src, Path(ctx) / part, ignore=shutil.ignore_patterns("__pycache__", ".env"))
             if src.is_dir() else shutil.copy(src, Path(ctx) / part))
        init = Path(ctx) / "zsexp" / "__init__.py"
        init.write_text(init.read_text() + "# one-line change\n")
        secs = stack.build_zsexp("zsexp:stack-test-change", Path(ctx))
    FIGURES["rebuild after a one-line code change (s)"] = f"{secs:.1f}"
    old, new = _layers(stack.ZSEXP_IMAGE), _layers("zsexp:stack-test-change")
    shared = next(i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
    base = len(_layers(stack.PYTHON_IMAGE))
    assert len(old) == len(new) and shared >= base + 4, (shared, base, len(old))   # users, deps, entrypoint, meta
    assert len(old) - shared <= 4                            # search spaces, jobs, code, install
    _sh("docker", "image", "rm", "zsexp:stack-test-change")


def test_example_secrets_refuse_to_start(st):
    for service, var in (("mlflow", "MLFLOW_ADMIN_PASSWORD"), ("ray-head", "RAY_AUTH_TOKEN")):
        out = subprocess.run(stack.compose_cmd() + ["-p", PROJECT + "ex", "--env-file", str(stack.ENV_EXAMPLE),
                                                    "-f", "compose.yaml", "-f", "compose.local.yaml", "run", "--rm",
                                                    "--no-deps", service],
                             capture_output=True, text=True, cwd=stack.DOCKER, timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        lines = [x for x in out.stderr.splitlines() if "zsexp-entrypoint: error" in x]
        assert len(lines) == 1 and var in lines[0] and "change-me" in lines[0], out.stderr
    subprocess.run(stack.compose_cmd() + ["-p", PROJECT + "ex", "--env-file", str(stack.ENV_EXAMPLE),
                                          "-f", "compose.yaml", "down", "--volumes"],
                   capture_output=True, cwd=stack.DOCKER, timeout=120)


def test_stack_comes_up_healthy_and_locked(st):
    secs = stack.up(PROJECT, st.env_file, workers=2)
    FIGURES["time to healthy from `up` (s)"] = f"{secs:.0f}"
    assert len(st.containers("ray-worker")) == 2
    # published ports listen on loopback only
    for service in ("mlflow", "ray-head"):
        bindings = json.loads(_sh("docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}",
                                  st.containers(service)[0]).stdout)
        published = [b for v in bindings.values() if v for b in v]
        assert published and all(b["HostIp"] == "127.0.0.1" for b in published), bindings
    for service in ("postgres", "minio"):
        bindings = json.loads(_sh("docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}",
                                  st.containers(service)[0]).stdout)
        assert not [b for v in bindings.values() if v for b in v], f"{service} publishes {bindings}"
    # no service runs as root
    for service in ("postgres", "minio", "mlflow", "ray-head", "ray-worker"):
        assert st.exec(service, "id", "-u").stdout.strip() != "0", service
    # the services nothing outside needs are on the internal network only
    internal = json.loads(_sh("docker", "network", "inspect", f"{PROJECT}_backend").stdout)[0]
    assert internal["Internal"] is True
    assert json.loads(_sh("docker", "network", "inspect", f"{PROJECT}_objects").stdout)[0]["Internal"] is True
    for service, nets in (("postgres", {"backend"}), ("minio", {"backend", "objects"}),
                          ("mlflow", {"default", "backend"}), ("ray-head", {"default", "objects"}),
                          ("ray-worker", {"default", "objects"})):
        got = json.loads(_sh("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}",
                             st.containers(service)[0]).stdout)
        assert {n.removeprefix(f"{PROJECT}_") for n in got} == nets, (service, sorted(got))
    # one secret, one purpose: the MLflow server's session key is its own, not the login password
    key = st.exec("mlflow", "printenv", "MLFLOW_FLASK_SERVER_SECRET_KEY").stdout.strip()
    assert len(key) >= 32 and key != st.env["MLFLOW_ADMIN_PASSWORD"] and key == st.env["MLFLOW_FLASK_SECRET_KEY"]
    # MLflow without credentials: 401
    with pytest.raises(urllib.error.HTTPError) as err:
        st.rest("/api/2.0/mlflow/experiments/search", {"max_results": 1}, auth=False)
    assert err.value.code == 401
    # the job API refuses a job without the token, and one with a wrong token
    for token, said in ((None, "Authentication required: Unauthorized"),
                        ("not-the-token", "Authentication failed: Forbidden")):
        out = _sh(RAY, "job", "submit", "--address", st.jobs, "--", "touch", "/tmp/pwned", check=False,
                  env=st.ray_env(token))
        assert out.returncode != 0 and said in out.stdout + out.stderr, out.stderr[-1500:]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(st.jobs + "/api/jobs/", timeout=10)
    assert err.value.code == 401
    assert st.exec("ray-head", "ls", "/tmp/pwned", check=False).returncode != 0


def test_container_addresses_unreachable_from_another_machine(st):
    """A machine that routes the stack's subnet through this host (a network namespace on a veth pair stands
    in for it) reaches no container address: Docker forwards to a published port's container address from
    every interface, whatever address it was published on, and the DOCKER-USER rule `docker/stack.py up`
    adds drops that.  Taken out for a moment, the same connection reaches MLflow's container address (so the
    namespace does reach the stack, and the rule is what stops it); then it is put back."""
    mlflow = st.containers("mlflow")[0]
    nets = json.loads(_sh("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", mlflow).stdout)
    ip = nets[f"{PROJECT}_default"]["IPAddress"]
    subnet = json.loads(_sh("docker", "network", "inspect", f"{PROJECT}_default").stdout)[0]["IPAM"]["Config"][0]
    ns, near, far = "zsexplan", "zsxlan0", "zsxlan1"
    setup = [("ip", "netns", "add", ns), ("ip", "link", "add", near, "type", "veth", "peer", "name", far),
             ("ip", "link", "set", far, "netns", ns), ("ip", "addr", "add", "10.213.0.1/30", "dev", near),
             ("ip", "link", "set", near, "up"),
             ("ip", "netns", "exec", ns, "ip", "addr", "add", "10.213.0.2/30", "dev", far),
             ("ip", "netns", "exec", ns, "ip", "link", "set", far, "up"),
             ("ip", "netns", "exec", ns, "ip", "route", "add", subnet["Subnet"], "via", "10.213.0.1")]

    def reaches() -> bool:
        probe = f"import socket; socket.create_connection(({ip!r}, 5000), timeout=3)"
        return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True,
                              timeout=30).returncode == 0
    try:
        for cmd in setup:
            _sh(*cmd)
        assert f"{PROJECT}_backend" not in stack.bridges(PROJECT)       # internal: Docker isolates it itself
        assert not reaches(), f"{ip}:5000 answered a connection routed from another machine"
        assert stack.unguard_bridges(PROJECT) >= 1
        assert reaches(), "without the rule the namespace does not reach the stack either: the test shows nothing"
        stack.guard_bridges(PROJECT)
        assert not reaches()
    finally:
        stack.guard_bridges(PROJECT)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", near], capture_output=True)


def _zsexp_lines(logs: str) -> str:
    """zsexp's own lines of a job's log (Ray adds its nodes' state dumps after a node died)."""
    return "\n".join(x for x in logs.splitlines() if x.startswith(("[stack", "zsexp", "    ")) and
                     "state-dump" not in x)


def _trial_steps(st: Stack, trial_dir: str) -> set[int]:
    text = st.state_text(f"{trial_dir}/result.json")
    return {json.loads(line)["training_iteration"] for line in text.splitlines() if line.strip()}


def test_sweep_through_the_job_api_survives_a_killed_worker_and_an_mlflow_restart(st):
    env_vars = {"ZSEXP_MODEL": "zscrgan", "ZSEXP_SWEEP_NAME": SWEEP, "ZSEXP_TRIALS": str(TRIALS),
                "ZSEXP_EXTRA": SWEEP_EXTRA}
    t0 = time.perf_counter()
    st.submit("sweep_job.py", env_vars, "sweep-1")
    # a worker container killed while it runs a trial
    deadline = time.time() + 300
    victim = None
    while victim is None and time.time() < deadline:
        try:
            running = [r for r in st.sweep_runs(SWEEP) if r["info"]["status"] == "RUNNING"]
        except urllib.error.URLError:
            running = []
        hosts = {t["value"] for r in running for t in r["data"].get("tags", []) if t["key"] == "zsexp.node_host"}
        for cid in st.containers("ray-worker"):
            if any(cid.startswith(h) or h.startswith(cid) for h in hosts):
                victim = cid
                break
        time.sleep(0.5)
    assert victim, "no trial was seen running on a worker container"
    _sh("docker", "kill", victim)
    # then the tracking server restarted while trials run (about 16 s here): writes are queued and replayed
    _sh("docker", "restart", "--time", "2", st.containers("mlflow")[0])
    _sh("docker", "start", victim)                 # the worker comes back and rejoins the head
    logs = st.wait_job("sweep-1")
    FIGURES["sweep wall time on the compose cluster (s)"] = (f"{time.perf_counter() - t0:.0f} "
                                                             "(a worker killed, MLflow restarted)")
    said = _zsexp_lines(logs)
    assert f"{TRIALS} trials ({TRIALS} completed" in said, said
    assert "trials keep running, tracking writes are queued" in said, said       # the outage was seen
    if "could not be made" in said:
        # the sweep ended before the server was back: its queued writes wait in the sweep's record and the
        # resumed job (as the driver's own message says) writes them once the server answers
        stack.wait_healthy(PROJECT, timeout=180)
        st.submit("sweep_job.py", {**env_vars, "ZSEXP_RESUME": "1"}, "sweep-1-resume")
        said += _zsexp_lines(st.wait_job("sweep-1-resume"))
        FIGURES["MLflow writes queued during the restart"] = "written by the resumed job"
    else:
        assert "MLflow is back after" in said, said
        FIGURES["MLflow writes queued during the restart"] = "written by the sweep itself"
    runs = st.sweep_runs(SWEEP)
    assert len(runs) == TRIALS                                            # exactly N child runs
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert all(t.get("zsexp.outcome") == "completed" for t in tags)
    workers = {h for t in tags for h in t["zsexp.node_hosts"].split(",")}        # every host a trial ran on
    assert len(workers) >= 2, workers                                    # trials on two worker containers
    head_host = st.exec("ray-head", "hostname").stdout.strip()
    assert head_host not in workers                                      # the head (0 CPUs) ran none
    # no metric lost: every round of every trial is in its MLflow history, each Tune recorded among them.
    # Tune's own result.json is not the reference: when a trial restarts from its checkpoint, Tune copies
    # the file back from storage over the driver's copy, and a row not yet synced there is dropped.
    keys = st.state_keys(f"sweeps/{SWEEP}/")                        # the sweep, as the object store holds it
    trial_dirs = sorted({k.rsplit("/", 1)[0] for k in keys if "/train_trial_" in k and k.endswith("/result.json")})
    assert len(trial_dirs) == TRIALS
    by_trial = {t["zsexp.trial_id"]: r for t, r in zip(tags, runs, strict=True)}
    for d in trial_dirs:
        tid = next(t for t in by_trial if f"_{t}_" in d)
        hist = st.rest(f"/api/2.0/mlflow/metrics/get-history?run_id={by_trial[tid]['info']['run_id']}"
                       f"&metric_key=val_precision_at_50&max_results=1000")["metrics"]
        steps = {int(m["step"]) for m in hist}
        assert steps == set(range(1, ROUNDS + 1)), (d, sorted(steps))
        assert _trial_steps(st, d) <= steps, d
    ckpts = {k.split("/checkpoint_")[0] + k.split("/checkpoint_")[1].split("/")[0] for k in keys if "/checkpoint_" in k}
    assert len(ckpts) >= TRIALS                                          # checkpoints in the object store
    for own in ("zsexp_sweep.json", "optuna_journal.log", "zsexp_signatures.json", "zsexp_progress.json"):
        assert f"sweeps/{SWEEP}/{own}" in keys, own
    assert len([k for k in keys if k.startswith(f"sweeps/{SWEEP}/zsexp_trials/")]) == TRIALS


def test_same_sweep_locally_for_comparison(st, tmp_path):
    env = {**os.environ, "ZSEXP_HOME": str(tmp_path / "home"), "RAY_AUTH_MODE": "disabled"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    out = _sh(sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--dataset", "synthetic-tiny", "--trials",
              str(TRIALS), "--cpus-per-trial", "1", "--name", "local", *SWEEP_EXTRA.split(), env=env, timeout=600)
    FIGURES["same sweep on local Ray + SQLite (s)"] = f"{time.perf_counter() - t0:.0f}"
    assert f"{TRIALS} trials ({TRIALS} completed" in out.stdout


def test_selection_ablation_and_promotion_on_the_cluster(st):
    st.submit("select_job.py", {"ZSEXP_SWEEP_NAME": SWEEP, "ZSEXP_K": "1", "ZSEXP_SEEDS": "2"}, "select-1")
    logs = st.wait_job("select-1")
    assert "@candidate" in logs
    st.submit("ablate_job.py", {"ZSEXP_MODEL": "zscrgan", "ZSEXP_FROM": SWEEP, "ZSEXP_VARIANTS": "no_gan",
                                "ZSEXP_SEEDS": "2", "ZSEXP_ABLATION_NAME": "stack-ablation"}, "ablate-1")
    logs = st.wait_job("ablate-1")
    assert "no_gan" in logs
    assert "ablations/stack-ablation/table.md" in st.state_keys("ablations/stack-ablation/")
    out = st.exec("ray-head", "zsexp", "promote", MODEL_NAME, "--alias", "champion")
    assert "champion" in out.stdout


def _end(st: Stack, sid: str, timeout: float = 600) -> tuple[str, str]:
    """A job's end state and its zsexp lines, whatever the state."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        state = st.job_status(sid)
        if state in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state, _zsexp_lines(_sh(RAY, "job", "logs", "--address", st.jobs, sid, env=st.ray_env()).stdout)
        time.sleep(2)
    raise AssertionError(f"job {sid} still running after {timeout}s")


def test_head_removed_mid_sweep_then_two_resumes_at_once(st):
    """Shared-nothing: the Ray head container (and the sweep's driver with it) removed in the middle of a
    sweep and created afresh, with no local state; two resubmitted jobs on the sweep at once: one takes the
    stale lease over and ends the sweep with exactly N trials, one finished child run each, no configuration
    trained twice; the other is refused in one line."""
    name, n = "stack-headless", 6
    env_vars = {"ZSEXP_MODEL": "zscrgan", "ZSEXP_SWEEP_NAME": name, "ZSEXP_TRIALS": str(n),
                "ZSEXP_EXTRA": SWEEP_EXTRA, "ZSEXP_LEASE_TTL_S": "15"}
    st.submit("sweep_job.py", env_vars, "headless-1")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            states = [r["info"]["status"] for r in st.sweep_runs(name)]
        except urllib.error.URLError:
            states = []
        if "FINISHED" in states and "RUNNING" in states:
            break
        time.sleep(0.5)
    assert "RUNNING" in states and states.count("FINISHED") < n, states
    old_head = st.containers("ray-head")[0]
    _sh("docker", "rm", "-f", old_head)                                  # the head and its disk, gone
    t0 = time.perf_counter()
    st.compose("up", "-d", "--no-deps", "--no-build", "ray-head")
    assert st.containers("ray-head")[0] != old_head
    for worker in st.containers("ray-worker"):                          # they join the new head
        _sh("docker", "restart", "--time", "2", worker)
    stack.wait_healthy(PROJECT, timeout=300)
    resume = {**env_vars, "ZSEXP_RESUME": "1"}
    st.submit("sweep_job.py", resume, "headless-2")
    st.submit("sweep_job.py", resume, "headless-3")
    ends = dict(zip(("headless-2", "headless-3"), (_end(st, "headless-2"), _end(st, "headless-3")), strict=True))
    FIGURES["head removed mid-sweep: new head to resumed sweep's end (s)"] = f"{time.perf_counter() - t0:.0f}"
    states = sorted(state for state, _ in ends.values())
    assert states == ["FAILED", "SUCCEEDED"], {k: (v[0], v[1][-1500:]) for k, v in ends.items()}
    refused = next(lines for state, lines in ends.values() if state == "FAILED")
    errors = [ln for ln in refused.splitlines() if ln.startswith("zsexp: error:")]
    assert len(errors) == 1 and ("in use by" in errors[0] or "at the same moment" in errors[0]), refused[-1500:]
    won = next(lines for state, lines in ends.values() if state == "SUCCEEDED")
    assert "took over the lease" in won, won[-1500:]
    runs = st.sweep_runs(name)
    assert len(runs) == n and all(r["info"]["status"] == "FINISHED" for r in runs)
    tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
    assert len({t["zsexp.trial_id"] for t in tags}) == n and all(t["zsexp.outcome"] == "completed" for t in tags)
    params = [json.dumps(sorted((p["key"], p["value"]) for p in r["data"].get("params", []))) for r in runs]
    assert len(set(params)) == n                                          # no configuration trained twice
    keys = st.state_keys(f"sweeps/{name}/")
    assert len([k for k in keys if k.startswith(f"sweeps/{name}/zsexp_trials/")]) == n
    assert f"sweeps/.{name}.lease" not in st.state_keys("sweeps/.")         # given back at the end
    out = st.client(f"import subprocess; print(subprocess.run(['zsexp', 'status', '{name}', '--json'], "
                    f"capture_output=True, text=True).stdout)")
    assert json.loads(out)["meta"]["status"] == "finished"              # read from the store by another client
    FIGURES["objects of the head-removed sweep in the store"] = str(len(keys))


def _containers(st: Stack) -> dict[str, str]:
    """Every running container of the stack: id -> its compose service."""
    out = _sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}")
    return {c: _sh("docker", "inspect", "--format", '{{index .Config.Labels "com.docker.compose.service"}}',
                   c).stdout.strip() for c in out.stdout.split()}


def test_no_secret_in_any_process_arguments(st):
    """Every process of every container, read from /proc after the sweep, selection and ablation jobs ran:
    no argument holds a secret of the stack's .env (passwords and tokens travel by environment or private
    files, never as arguments)."""
    secrets_ = {k: st.env[k] for k in stack.SECRET_KEYS}
    assert all(len(v) >= 32 for v in secrets_.values())
    seen = 0
    for c, service in _containers(st).items():
        args = _sh("docker", "exec", c, "sh", "-c",
                   'for p in /proc/[0-9]*; do tr "\\0" " " < "$p/cmdline" 2>/dev/null; echo; done').stdout
        seen += len([line for line in args.splitlines() if line.strip()])
        leaked = sorted(k for k, v in secrets_.items() if v in args)
        assert not leaked, f"{service}: {leaked} appear in a process's arguments"
    FIGURES["processes whose arguments were read"] = str(seen)
    assert seen > 20


def _listening(container: str) -> list[tuple[str, int]]:
    """The TCP sockets a container listens on, from /proc (no tool needed in the image): (address, port)."""
    text = _sh("docker", "exec", container, "sh", "-c", "cat /proc/net/tcp /proc/net/tcp6").stdout
    out = set()
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A":                      # LISTEN
            addr, port = parts[1].rsplit(":", 1)
            ip = ("127.0.0.11" if addr == "0B00007F" else "loopback" if addr in ("0100007F", "0" * 24 + "01000000")
                  else "any" if set(addr) == {"0"} else "container")
            out.add((ip, int(port, 16)))
    return sorted(out)


def test_listening_ports(st):
    """Every port every container listens on, recorded for docs/stack.md; the object store, Postgres and
    MLflow listen beyond loopback only on the port each authenticates (S3 signatures, password, basic
    auth).  127.0.0.11 is Docker's own DNS resolver, in every container."""
    expected = {"minio": {9000}, "postgres": {5432}, "mlflow": {5000}}
    for c, service in sorted(_containers(st).items(), key=lambda kv: kv[1]):
        ports = [(ip, port) for ip, port in _listening(c) if ip != "127.0.0.11"]
        open_ = {port for ip, port in ports if ip in ("any", "container")}
        FIGURES[f"listening {service} {c[:6]}"] = " ".join(f"{port}({ip})" for ip, port in ports)
        if service in expected:
            assert open_ == expected[service], f"{service} listens beyond loopback on {sorted(open_)}"


def _guarded(row: dict) -> bool:
    """A probe's row (tests/stack/probe_ports.py) of a port that refused the credential-less request."""
    return (row.get("http") in (401, 403) or "UNAUTHENTICATED" in row.values()
            or any(s in str(row.get("postgres", "")) for s in ("password authentication failed", "no password")))


def test_every_port_refuses_without_credentials(st):
    """Every port any container listens on beyond its loopback is probed from a container on the same
    network with no credential (HTTP, gRPC of every Ray service, a Postgres login): each refuses, except
    Ray's Prometheus metrics endpoints, which answer metrics text (docs/stack.md says why they stay)."""
    probe = ROOT / "tests" / "stack" / "probe_ports.py"
    targets: dict[str, list] = {"default": [], "backend": []}
    for c, service in _containers(st).items():
        nets = json.loads(_sh("docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", c).stdout)
        net = "default" if f"{PROJECT}_default" in nets else "backend"
        ip = nets[f"{PROJECT}_{net}"]["IPAddress"]
        targets[net] += [[ip, port, service] for where, port in _listening(c) if where in ("any", "container")]
    rows = []
    for net, tg in targets.items():
        out = _sh("docker", "run", "--rm", "--network", f"{PROJECT}_{net}", "-v", f"{probe}:/tmp/probe.py:ro",
                  stack.ZSEXP_IMAGE, "python", "/tmp/probe.py", json.dumps([t[:2] for t in tg]), timeout=600)
        for t, line in zip(tg, out.stdout.splitlines(), strict=True):
            rows.append((t[2], json.loads(line)))
    metrics = [f"{svc} {r['target']}" for svc, r in rows if r.get("http") == 200 and r.get("prometheus")]
    open_ = [f"{svc} {r}" for svc, r in rows if not _guarded(r) and not (r.get("http") == 200 and r.get("prometheus"))]
    FIGURES["ports probed without credentials"] = f"{len(rows)}: {len(rows) - len(metrics)} refused, " \
                                                  f"{len(metrics)} Ray metrics endpoints answered"
    assert len(rows) >= 15 and not open_, f"ports that answer without credentials: {open_}"
    assert all(svc.startswith("ray") for svc, r in rows if r.get("http") == 200)


def test_a_client_reads_everything_back(st):
    # the REST API with the credentials, from the host
    runs = st.sweep_runs(SWEEP)
    assert len(runs) == TRIALS
    alias = st.rest(f"/api/2.0/mlflow/registered-models/alias?name={MODEL_NAME}&alias=champion")
    assert alias["model_version"]["version"]
    # the rows in Postgres
    sql = ("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
           f"where t.key = 'zsexp.sweep' and t.value = '{SWEEP}'")
    count = st.exec("postgres", "psql", "-U", st.env["POSTGRES_USER"], "-d", st.env["POSTGRES_DB"], "-tAc", sql)
    assert int(count.stdout.strip()) >= TRIALS + 1                       # the parent and its trials
    # the checkpoint artifacts in the object store, listed with an S3 client; the champion answers a query
    out = st.client("""
import json, os, boto3, mlflow, numpy as np
from zsexp.data import load_dataset
s3 = boto3.client("s3", endpoint_url="http://minio:9000", region_name="us-east-1")
keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["MLFLOW_BUCKET"])
        for o in p.get("Contents", [])]
model = mlflow.pyfunc.load_model("models:/MODEL@champion")
d = load_dataset("synthetic-tiny")
imgs = d.images("test")
out = model.predict({"queries": d.class_embeddings[d.test_classes], "gallery": d.features[imgs]}, params={"k": 5})
rel = d.labels[imgs][out["indices"]] == d.test_classes[:, None]
print(json.dumps({"ckpt": sum("best_checkpoint" in k for k in keys), "n": len(keys),
                  "shape": list(out["indices"].shape), "p5": float(100 * rel.mean())}))
""".replace("MODEL", MODEL_NAME))
    got = json.loads(out.strip().splitlines()[-1])
    assert got["ckpt"] >= TRIALS, got                                    # each trial's best checkpoint
    assert got["shape"][1] == 5, got


def test_down_and_up_keeps_sweeps_runs_and_the_registry(st):
    st.compose("down", "--timeout", "10")                                # volumes kept
    stack.up(PROJECT, st.env_file, workers=2)
    status = st.exec("ray-head", "zsexp", "status", SWEEP)                # $ZSEXP_STATE_URI/sweeps
    assert f"{TRIALS}" in status.stdout and SWEEP in status.stdout, status.stdout
    st.submit("sweep_job.py", {"ZSEXP_MODEL": "zscrgan", "ZSEXP_SWEEP_NAME": SWEEP, "ZSEXP_TRIALS": str(TRIALS),
                               "ZSEXP_RESUME": "1"}, "resume-1")
    st.wait_job("resume-1")
    assert len(st.sweep_runs(SWEEP)) == TRIALS                           # resume re-ran nothing
    st.submit("select_job.py", {"ZSEXP_SWEEP_NAME": SWEEP, "ZSEXP_K": "1", "ZSEXP_SEEDS": "2"}, "select-2")
    logs = st.wait_job("select-2")
    assert "4 of 4 runs already finished" in logs, logs[-2000:]      # nothing fitted twice
    alias = st.rest(f"/api/2.0/mlflow/registered-models/alias?name={MODEL_NAME}&alias=champion")
    assert alias["model_version"]["version"]
