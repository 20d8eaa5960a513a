"""docker/ and jobs/: linted (hadolint, yamllint), consistent with each other and with zsexp's settings, and
locked by default (token-authenticated Ray, loopback ports, no example secret accepted).

These checks need no Docker engine; the stack itself is built and run by `make stack-test`
(tests/stack/test_stack.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


COMPOSE = ROOT / "docker" / "compose.yaml"


ENV_EXAMPLE = ROOT / "docker" / ".env.example"


ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


DOCKERFILE = ROOT / "docker" / "Dockerfile"


DOCKERFILES = [DOCKERFILE, *sorted((ROOT / "docker" / "local").glob("*.Dockerfile"))]


COMPOSE_FILES = sorted((ROOT / "docker").glob("compose*.yaml"))


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    assert Path(path).exists(), f"{name} is a dev dependency (pip install -e '.[dev]') and must be installed"
    return path


def test_hadolint_dockerfiles():
    assert len(DOCKERFILES) == 4
    out = subprocess.run([_tool("hadolint"), *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_yamllint_all_yaml():
    files = [str(p) for folder in ("docker", "jobs", "search_spaces") for p in ROOT.glob(f"{folder}/*.yaml")]
    assert len(files) >= 5
    out = subprocess.run([_tool("yamllint"), "-c", str(ROOT / ".yamllint.yaml"), *files],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return {k: v for k, v in pairs}


def test_env_example_has_only_placeholders_and_matches_compose():
    env = _env_example()
    sys.path.insert(0, str(ROOT / "docker"))
    import stack

    for key in stack.SECRET_KEYS:
        assert "change-me" in env[key], f"{key} must be a placeholder in the committed example"
    text = "".join(f.read_text() for f in COMPOSE_FILES)
    required = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)\}", text))            # no default: .env must set them
    used = required | set(re.findall(r"(?<!\$)\$\{([A-Z_]+):-", text))
    assert required <= set(env), f"compose needs {sorted(required - set(env))}, absent from .env.example"
    assert set(env) - used == {"RAY_WORKERS"}, sorted(set(env) - used)    # RAY_WORKERS: docker/stack.py's --scale
    assert "/docker/.env" in (ROOT / ".gitignore").read_text()


def test_compose_services_agree_with_entrypoint_and_settings():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "ray-head", "ray-worker"} <= set(services)
    roles = set(re.findall(r"^  ([a-z0-9-]+)\)$", ENTRYPOINT.read_text(), flags=re.M))
    entry = ENTRYPOINT.read_text()
    local = yaml.safe_load((ROOT / "docker" / "compose.local.yaml").read_text())["services"]
    for name, svc in services.items():
        image = svc.get("image", "")
        if "ZSEXP_IMAGE" in image or local.get(name, {}).get("command", [""])[0] in roles:
            role = local.get(name, {}).get("command", svc.get("command"))[0]
            assert role in roles, f"{name}: entrypoint has no role {role!r}"
            branch = entry.split(f"  {role})", 1)[1].split(";;", 1)[0]
            env = {**svc.get("environment", {}), **local.get(name, {}).get("environment", {})}
            for required in re.findall(r"\$\{([A-Z_]+):\?", branch):
                assert required in env, f"{name} must set {required} for role {role}"
        if name != "minio-init":
            assert "healthcheck" in svc and svc.get("restart") == "unless-stopped", name
        for port in svc.get("ports", []):           # published on loopback unless ZSEXP_BIND_ADDRESS says otherwise
            assert port.startswith("${ZSEXP_BIND_ADDRESS:-127.0.0.1}:"), f"{name} publishes {port}"
    assert not {"postgres", "minio"} & {n for n, v in services.items() if v.get("ports")}
    # the tracking URI, the Ray head address, the Ray token and the shared state path line up
    head_env = services["ray-head"]["environment"]
    assert head_env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{services['mlflow']['environment']['MLFLOW_PORT']}"
    host, port = services["ray-worker"]["environment"]["RAY_HEAD_ADDRESS"].split(":")
    assert host == "ray-head" and port == head_env["RAY_PORT"]
    for name, svc in services.items():     # shared-nothing: no volume is mounted by a Ray container
        assert not (name.startswith("ray-") and svc.get("volumes")), name
    assert "shared" not in spec.get("volumes", {})
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["ZSEXP_STATE_URI"] == "s3://${ZSEXP_BUCKET}" and env["ZSEXP_STATE_KEY"] == "${ZSEXP_STATE_KEY}"
        assert env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000" and "objects" in services[name]["networks"]
        assert not env["ZSEXP_HOME"].startswith("/shared")
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "${RAY_AUTH_TOKEN}"
    assert "postgresql+psycopg2://" in services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"]
    gpu = yaml.safe_load((ROOT / "docker" / "compose.gpu.yaml").read_text())["services"]["ray-worker"]
    dev = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    # zsexp reads exactly these variables
    src = "".join(p.read_text() for p in (ROOT / "zsexp").rglob("*.py"))
    for var in ("ZSEXP_HOME", "MLFLOW_TRACKING_URI", "ZSEXP_SEARCH_SPACES"):
        assert var in src


def test_image_layout_matches_settings():
    docker = DOCKERFILE.read_text()
    assert "ZSEXP_SEARCH_SPACES=/opt/zsexp/search_spaces" in docker
    assert "COPY search_spaces /opt/zsexp/search_spaces" in docker
    assert "COPY docker/entrypoint.sh /usr/local/bin/zsexp-entrypoint" in docker
    assert 'ENTRYPOINT ["/usr/local/bin/zsexp-entrypoint"]' in docker and "USER 1000:1000" in docker
    assert "COPY jobs /opt/zsexp/jobs" in docker
    pins = dict(line.split("==") for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines()
                if "==" in line)
    assert {"ray", "optuna", "mlflow"} <= set(pins)


def _pins(path: Path) -> dict[str, str]:
    return {name.lower().replace("_", "-"): version for name, version in
            (line.split("==") for line in path.read_text().splitlines() if "==" in line and not line.startswith("#"))}


def test_one_set_of_versions():
    """The image and a fresh clone run the same versions: every package both locks pin is pinned alike, the
    lock satisfies pyproject's bounds, and torch is pinned without a local build label."""
    from packaging.requirements import Requirement

    lock, image = _pins(ROOT / "constraints.txt"), _pins(ROOT / "docker" / "constraints.txt")
    differ = {k: (lock[k], image[k]) for k in set(lock) & set(image) if lock[k] != image[k]}
    assert not differ, f"constraints.txt and docker/constraints.txt pin these differently: {differ}"
    import tomllib

    for req in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]):
        assert req.name.lower() in lock, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(lock[req.name.lower()]), f"constraints.txt pins {req.name} outside {req}"
    assert "+" not in lock["torch"]


def test_rayjob_manifests_agree_with_image_and_entrypoints():
    image = re.sub(r"\$\{ZSEXP_IMAGE:-(.*)\}", r"\1", yaml.safe_load(COMPOSE.read_text())["x-zsexp"]["image"])
    for manifest, script in (("rayjob-sweep.yaml", "sweep_job.py"), ("rayjob-select.yaml", "select_job.py"),
                             ("rayjob-ablate.yaml", "ablate_job.py")):
        spec = yaml.safe_load((ROOT / "jobs" / manifest).read_text())["spec"]
        assert spec["entrypoint"] == f"python /opt/zsexp/jobs/{script}" and (ROOT / "jobs" / script).is_file()
        env_vars = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
        source = (ROOT / "jobs" / script).read_text()
        for key in env_vars:
            assert key in source, f"{manifest} sets {key}, which {script} does not read"
        head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        for c in (head, workers):
            assert c["image"] == image
            assert "volumeMounts" not in c                                 # shared-nothing
            names = {e["name"] for e in c["env"]}
            needed = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "ZSEXP_HOME",
                      "ZSEXP_STATE_URI", "ZSEXP_STATE_KEY", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY"}
            assert needed <= names
        for group in (spec["rayClusterSpec"]["headGroupSpec"], spec["rayClusterSpec"]["workerGroupSpecs"][0]):
            assert "volumes" not in group["template"]["spec"]
        assert "/shared" not in (ROOT / "jobs" / manifest).read_text()
        assert "nvidia.com/gpu" in workers["resources"]["limits"]
        assert spec["rayClusterSpec"]["authOptions"]["mode"] == "token"        # Ray's control plane locked



def _entrypoint(role: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), role], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_entrypoint_refuses_example_secrets_and_an_open_ray():
    example = _env_example()
    mlflow = {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@db/x", "MLFLOW_ARTIFACTS_DESTINATION": "s3://b",
              "MLFLOW_ADMIN_USERNAME": "admin", "MLFLOW_ADMIN_PASSWORD": example["MLFLOW_ADMIN_PASSWORD"]}
    ray = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": example["RAY_AUTH_TOKEN"], "RAY_HEAD_ADDRESS": "h:1"}
    cases = [("mlflow-server", mlflow, "MLFLOW_ADMIN_PASSWORD"),
             ("mlflow-server", {**mlflow, "MLFLOW_ADMIN_PASSWORD": "s3cret",
                                "AWS_SECRET_ACCESS_KEY": example["MINIO_ROOT_PASSWORD"]}, "AWS_SECRET_ACCESS_KEY"),
             ("ray-head", ray, "RAY_AUTH_TOKEN"), ("ray-worker", ray, "RAY_AUTH_TOKEN"),
             ("ray-head", {"RAY_AUTH_TOKEN": "s3cret"}, "RAY_AUTH_MODE=token"),
             ("ray-worker", {**ray, "RAY_AUTH_TOKEN": ""}, "RAY_AUTH_TOKEN"),
             ("mlflow-server", {**mlflow, "MLFLOW_ADMIN_PASSWORD": "s3cret",
                                "MLFLOW_FLASK_SERVER_SECRET_KEY": "s3cret"}, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
             ("mlflow-server", {**mlflow, "MLFLOW_ADMIN_PASSWORD": "s3cret"}, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
             ("s3-bucket", {"MLFLOW_S3_ENDPOINT_URL": "http://s3:9000", "MLFLOW_BUCKET": "b",
                            "AWS_SECRET_ACCESS_KEY": example["MINIO_ROOT_PASSWORD"]}, "AWS_SECRET_ACCESS_KEY")]
    for role, env, needle in cases:
        out = _entrypoint(role, **env)
        assert out.returncode == 2, (role, env, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and role in lines[0], out.stderr
        assert "s3cret" not in out.stderr


def test_stack_env_has_fresh_secrets_kept_private(tmp_path):
    sys.path.insert(0, str(ROOT / "docker"))
    import stack

    a, b = stack.fresh_env(), stack.fresh_env(MLFLOW_HOST_PORT="5123")
    env = dict(line.split("=", 1) for line in a.splitlines() if line and not line.startswith("#"))
    assert not [k for k, v in env.items() if "change-me" in v] and a != b and "MLFLOW_HOST_PORT=5123" in b
    assert set(env) == set(_env_example())
    for key in stack.SECRET_KEYS:
        assert len(env[key]) >= 32
    path = tmp_path / ".env"
    stack.write_env(path, a)
    assert path.stat().st_mode & 0o777 == 0o600
    assert stack.ensure_env(path) is False and path.read_text() == a       # an existing file is kept
    path.chmod(0o644)
    try:
        stack.ensure_env(path)
        raise AssertionError("a world-readable .env was accepted")
    except stack.StackError as exc:
        assert "chmod 600" in str(exc)


def test_one_secret_one_purpose(tmp_path):
    """Every secret of the stack is its own random value: the MLflow server's session key is not the admin
    password; a .env made before a key existed gets it on the next `make stack-env`, keeping every other
    line; a missing, empty or duplicated secret is refused naming the keys, never the values."""
    sys.path.insert(0, str(ROOT / "docker"))
    import stack

    compose = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]["environment"]
    assert compose["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "${MLFLOW_FLASK_SECRET_KEY}"
    values = [v for k, v in stack.parse_env(stack.fresh_env()).items() if k in stack.SECRET_KEYS]
    assert len(values) == len(set(values)) == len(stack.SECRET_KEYS)
    old = "".join(line + "\n" for line in stack.fresh_env().splitlines() if not line.startswith("MLFLOW_FLASK"))
    path = tmp_path / ".env"
    stack.write_env(path, old)
    assert stack.ensure_env(path) is False
    now = path.read_text()
    assert now.startswith(old) and stack.read_env(path)["MLFLOW_FLASK_SECRET_KEY"] not in old
    assert stack.read_env(path).keys() == stack.parse_env(stack.fresh_env()).keys()
    env = stack.read_env(path)
    for broken, needle in (({**env, "MLFLOW_FLASK_SECRET_KEY": env["MLFLOW_ADMIN_PASSWORD"]},
                            "MLFLOW_ADMIN_PASSWORD and MLFLOW_FLASK_SECRET_KEY have the same value"),
                           ({**env, "RAY_AUTH_TOKEN": ""}, "RAY_AUTH_TOKEN missing or empty")):
        with pytest.raises(stack.StackError) as err:
            stack.check_secrets(broken, path)
        assert needle in str(err.value) and env["MLFLOW_ADMIN_PASSWORD"] not in str(err.value)


def test_no_secret_on_a_command_line():
    """Passwords and keys reach the servers by environment or private files, never as arguments, which any
    user of the host (and `ps` in a container sharing the PID view) can read."""
    entry = ENTRYPOINT.read_text()
    assert "--backend-store-uri" not in entry                  # mlflow reads MLFLOW_BACKEND_STORE_URI itself
    init = yaml.safe_load(COMPOSE.read_text())["services"]["minio-init"]
    assert "MINIO_ROOT_PASSWORD" not in " ".join(init["command"]), init["command"]
    assert "MC_HOST_store" in init["environment"]
