"""docker/ and jobs/: linted (hadolint, yamllint) and consistent with each other and with zsexp's settings.

No Docker engine or Kubernetes runs here: these checks are what can be verified without one
(README, *Cluster*, says which parts need a cluster to check)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


COMPOSE = ROOT / "docker" / "compose.yaml"


ENV_EXAMPLE = ROOT / "docker" / ".env.example"


ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).with_name(name))
    assert Path(path).exists(), f"{name} is a dev dependency (pip install -e '.[dev]') and must be installed"
    return path


def test_hadolint_dockerfile():
    out = subprocess.run([_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
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
    for key, value in env.items():
        if "PASSWORD" in key:
            assert "change-me" in value, f"{key} must be a placeholder in the committed example"
    text = COMPOSE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_]+)\}", text))
    assert used == set(env), f"compose uses {sorted(used)}, .env.example defines {sorted(env)}"
    assert "/docker/.env" in (ROOT / ".gitignore").read_text()


def test_compose_services_agree_with_entrypoint_and_settings():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "ray-head", "ray-worker"} <= set(services)
    roles = set(re.findall(r"^  ([a-z-]+)\)$", ENTRYPOINT.read_text(), flags=re.M))
    entry = ENTRYPOINT.read_text()
    for name, svc in services.items():
        if svc.get("image", "").startswith("zsexp"):
            role = svc["command"][0]
            assert role in roles, f"{name}: entrypoint has no role {role!r}"
            branch = entry.split(f"  {role})", 1)[1].split(";;", 1)[0]
            for required in re.findall(r"\$\{([A-Z_]+):\?", branch):
                assert required in svc["environment"], f"{name} must set {required} for role {role}"
        if name != "minio-init":
            assert "healthcheck" in svc and svc.get("restart") == "unless-stopped", name
    # the tracking URI, the Ray head address and the shared state path line up
    head_env = services["ray-head"]["environment"]
    assert head_env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{services['mlflow']['environment']['MLFLOW_PORT']}"
    host, port = services["ray-worker"]["environment"]["RAY_HEAD_ADDRESS"].split(":")
    assert host == "ray-head" and port == head_env["RAY_PORT"]
    for name in ("ray-head", "ray-worker"):
        assert "shared:/shared" in services[name]["volumes"]
        assert services[name]["environment"]["ZSEXP_HOME"].startswith("/shared/")
    gpu = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
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


def test_rayjob_manifests_agree_with_image_and_entrypoints():
    image = yaml.safe_load(COMPOSE.read_text())["x-zsexp"]["image"]
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
            assert {"name": "shared", "mountPath": "/shared"} in c["volumeMounts"]
            names = {e["name"] for e in c["env"]}
            needed = {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "ZSEXP_HOME"}
            assert needed <= names
        assert env_vars.get("ZSEXP_STORAGE", "/shared").startswith("/shared")
        assert "nvidia.com/gpu" in workers["resources"]["limits"]

