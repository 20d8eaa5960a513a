"""How Ray is reached and sized: join ``--address`` or start a local Ray, and the trials' resources.

GPU budget: ``--gpus N`` with ``--gpus-per-trial F`` runs up to ``floor(N / F)`` trials at once.
``ZSEXP_SIMULATE_GPUS=M`` starts the local Ray with M *logical* GPUs, so the scheduling of a GPU
cluster can be checked on a CPU machine (trials still compute on the CPU).
"""

from __future__ import annotations

import math
import os
from typing import Any

from zsexp.errors import ZsexpError


def init_ray(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; returns True when zsexp started it (and must stop it)."""
    import ray

    quiet_tune_logs()
    if address:
        check_ray_address(address)
    if ray.is_initialized():          # zsexp used as a library inside a process already on a Ray
        joined = ray.get_runtime_context().gcs_address
        if address and address not in ("auto", joined) and address.split("://")[-1] != joined:
            raise ZsexpError(f"--address {address}: this process is already connected to the Ray cluster at "
                             f"{joined}; run the command in a new process to join another")
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": True, "logging_level": "ERROR"}
    sim = os.environ.get("ZSEXP_SIMULATE_GPUS")
    if address:
        kwargs["address"] = address
    elif sim:
        kwargs["num_gpus"] = float(sim)
    import signal

    before = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        hint = ""
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":     # Ray's own error does not say why
            hint = ("; a cluster with token authentication (zsexp's compose stack, KubeRay authOptions) "
                    "refuses a client without its token: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN")
        raise ZsexpError(f"cannot join the Ray cluster at {address}: {exc}{hint}") from None
    if before not in (signal.SIG_DFL, signal.SIG_IGN, None):    # ray.init replaces it with sys.exit; the CLI's
        signal.signal(signal.SIGTERM, before)                   # handler stops the sweep resumably instead
    return True


def quiet_tune_logs() -> None:
    """Tune logs each failed trial's traceback on stderr; zsexp reports failures itself (progress lines,
    `zsexp status`, the MLflow child run's error tag, one error line), so those logs are kept off the
    console."""
    import logging

    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # Tune's boxed tables and "View detailed results" lines: zsexp prints its own one-line progress
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


RAY_CONNECT_TIMEOUT_S = 10


def check_ray_address(address: str) -> None:
    """A bounded look at ``--address`` before ``ray.init`` (which retries an unreachable head for minutes):
    ``auto`` or ``HOST:PORT`` (``ray://HOST:PORT`` for Ray Client) must accept a TCP connection."""
    import socket
    from urllib.parse import urlsplit

    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    try:
        parts = urlsplit(f"//{hostport}")
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ZsexpError(f"--address {address!r}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ZsexpError(f"cannot reach the Ray cluster at {address}: a TCP connection to {host}:{port} failed "
                         f"within {RAY_CONNECT_TIMEOUT_S}s ({exc.strerror or exc})") from None


def finite(value: float, flag: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ZsexpError(f"{flag} must be a finite number, got {value!r}")
    return float(value)


def validate_resources(gpus: float, gpus_per_trial: float | None, cpus_per_trial: float,
                       max_concurrent: int | None) -> None:
    """Per-trial resources that cannot be meant, refused before anything starts (a sweep's and an
    ablation's ``--gpus``, ``--gpus-per-trial``, ``--cpus-per-trial``, ``--max-concurrent``)."""
    if finite(gpus, "--gpus") < 0:
        raise ZsexpError(f"--gpus must be >= 0, got {gpus:g}")
    if gpus_per_trial is not None:
        finite(gpus_per_trial, "--gpus-per-trial")
        if gpus == 0:
            raise ZsexpError(f"--gpus-per-trial {gpus_per_trial:g} needs a GPU budget: pass --gpus N (N > 0), or "
                             f"drop --gpus-per-trial for CPU trials")
        if not 0 < gpus_per_trial <= gpus:
            raise ZsexpError(f"--gpus-per-trial must be in (0, --gpus={gpus:g}], got {gpus_per_trial:g}")
    if finite(cpus_per_trial, "--cpus-per-trial") <= 0:
        raise ZsexpError(f"--cpus-per-trial must be > 0, got {cpus_per_trial:g}")
    if max_concurrent is not None and max_concurrent < 1:
        raise ZsexpError(f"--max-concurrent must be >= 1, got {max_concurrent}")


def trial_resources(opts: dict[str, Any]) -> tuple[dict[str, float], int]:
    import ray

    cluster = ray.cluster_resources()
    cpu, gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    res = {"cpu": float(opts["cpus_per_trial"])}
    if opts["gpus"] > 0:
        if gpu < opts["gpus"]:
            raise ZsexpError(f"--gpus {opts['gpus']:g} asked, but the Ray cluster has {gpu:g} GPU(s); "
                             f"lower --gpus, add GPU workers, or set ZSEXP_SIMULATE_GPUS to simulate them")
        per_trial = 1.0 if opts.get("gpus_per_trial") is None else opts["gpus_per_trial"]
        if not 0 < per_trial <= opts["gpus"]:
            raise ZsexpError(f"--gpus-per-trial must be in (0, --gpus={opts['gpus']:g}], got {per_trial:g}")
        res["gpu"] = float(per_trial)
        concurrency = int(math.floor(opts["gpus"] / per_trial + 1e-9))
    else:
        per = max(opts["cpus_per_trial"], 1e-3)
        if per > cpu:
            raise ZsexpError(f"--cpus-per-trial {per:g} exceeds the cluster's {cpu:g} CPUs")
        concurrency = max(1, int(math.floor(cpu / per + 1e-9)))
    if opts.get("max_concurrent"):
        concurrency = min(concurrency, int(opts["max_concurrent"]))
    return res, concurrency


def trial_threads() -> int:
    """Under Ray: one intra-op thread per CPU the trial was granted, at least one.  Trials that share a
    machine then do not oversubscribe its cores (torch's default is one thread per core *each*)."""
    import ray

    from zsexp.models.common import set_threads

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return set_threads(max(1, int(cpus)))
