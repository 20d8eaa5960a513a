"""``zsexp search`` / ``resume`` / ``status``: a sweep = one Ray Tune experiment + one MLflow parent run.

Layout on Ray's storage (``--storage``, default ``$ZSEXP_HOME/sweeps``)::

    <storage>/<name>/               Tune's experiment directory (trials, checkpoints, searcher state)
    <storage>/<name>/zsexp_sweep.json   what zsexp needs to resume: model, dataset, space, MLflow ids

GPU budget: ``--gpus N`` with ``--gpus-per-trial F`` runs up to ``floor(N / F)`` trials at once.
``ZSEXP_SIMULATE_GPUS=M`` starts the local Ray with M *logical* GPUs, so the scheduling of a GPU
cluster can be checked on a CPU machine (trials still compute on the CPU).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from zsexp.baselines import margin
from zsexp.errors import ZsexpError
from zsexp.faults import kill_point
from zsexp.names import check_name, filter_value
from zsexp.paths import default_tracking_uri, zsexp_home
from zsexp.search import integrity
from zsexp.search.lock import SweepLock
from zsexp.search.space import SearchSpace, load_space, parse_space
from zsexp.search.trainable import UPDATES_KEY, train_trial, trial_params

SWEEP_FILE = "zsexp_sweep.json"
CALLBACK_FILE = "zsexp_progress.json"
MAX_TRIALS = 100_000         # a sweep's documented cap: beyond it the driver's own records grow unwieldy


@dataclass
class SweepOptions:
    model: str
    dataset: str = "synthetic-tiny"
    space: str | None = None
    trials: int = 8
    gpus: float = 0.0
    gpus_per_trial: float | None = None      # default 1 when --gpus > 0; refused without GPUs
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    seed: int = 0
    data_seed: int = 0
    name: str | None = None
    storage: str | None = None
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    sets: tuple[str, ...] = ()
    retries: int = 2
    max_failed_trials: int | None = None
    keep_checkpoints: int | None = None
    device: str = "auto"
    progress_every_s: float = 5.0


def default_storage() -> Path:
    return zsexp_home() / "sweeps"


def sweeps_root(storage: str | None) -> Path:
    """The directory holding the sweeps (``--storage``, default ``$ZSEXP_HOME/sweeps``)."""
    if storage is not None and not str(storage).strip():
        raise ZsexpError("--storage must not be empty")
    base = storage or str(default_storage())
    if "://" in base:
        raise ZsexpError("zsexp keeps sweep metadata beside Tune's: --storage must be a (shared) file system path")
    return Path(base).expanduser().resolve()


def check_writable_root(root: Path) -> None:
    """Refuse a sweeps root that cannot be created or written, before anything is written."""
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ZsexpError(f"--storage {root}: {probe} is not a directory")
    st = probe.stat()
    try:               # a real probe (permission bits say nothing to root, or of /proc); its traces are undone
        os.rmdir(tempfile.mkdtemp(prefix=".zsexp-probe-", dir=probe))
    except OSError as exc:
        raise ZsexpError(f"--storage {root}: cannot write in {probe} ({exc.strerror or exc})") from None
    finally:
        try:
            os.utime(probe, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError:
            pass


def sweep_dir(name: str, storage: str | None) -> Path:
    """``<root>/<name>`` for a checked name; a directory that resolves outside the root (a planted link)
    is refused."""
    root = sweeps_root(storage)
    d = root / check_name(name)
    if d.is_symlink() or (d.exists() and d.resolve().parent != root):
        raise ZsexpError(f"{d} is a link out of the sweeps root {root}; refused")
    return d


def sweep_names(storage: str | None) -> list[str]:
    """The sweeps under ``storage`` (directories holding a sweep file), sorted by name."""
    return sorted(p.parent.name for p in sweeps_root(storage).glob(f"*/{SWEEP_FILE}"))


META_KEYS = {"name": str, "model": str, "dataset": str, "dataset_name": str, "trials": int, "space": dict,
             "space_source": str, "tracking_uri": str, "experiment": str, "experiment_id": str,
             "parent_run_id": str, "options": dict, "trial_meta": dict, "status": str}


def read_meta(name: str, storage: str | None) -> dict[str, Any]:
    """The sweep's metadata, checked: a corrupt or edited file is one clear error.  Its directory is
    where it was found, never a path read from the file (``dir`` and ``trial_meta.sweep_dir`` are set
    from it), so no stored path can point zsexp outside the sweep."""
    d = sweep_dir(name, storage)
    path = d / SWEEP_FILE
    if not path.is_file():
        known = sweep_names(storage)
        shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        raise ZsexpError(f"no sweep {name!r} under {d.parent} (known: {shown or 'none'}); "
                         f"pass --storage if it lives elsewhere")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ZsexpError(f"{path}: unreadable sweep metadata ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(meta, dict):
        raise ZsexpError(f"{path}: unreadable sweep metadata (a JSON object is expected)")
    for key, typ in META_KEYS.items():
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            raise ZsexpError(f"{path}: key `{key}` is missing or not a {typ.__name__}; the file is damaged")
    if meta["name"] != name:
        raise ZsexpError(f"{path}: it describes sweep {meta['name']!r}, not {name!r}; the file was moved or edited")
    from zsexp.models import MODELS

    if meta["model"] not in MODELS:
        raise ZsexpError(f"{path}: unknown model {meta['model']!r}")
    meta["dir"] = str(d)
    meta["trial_meta"]["sweep_dir"] = str(d)
    return meta


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- Ray
def _init_ray(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; returns True when zsexp started it (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": True, "logging_level": "ERROR"}
    sim = os.environ.get("ZSEXP_SIMULATE_GPUS")
    if address:
        check_ray_address(address)
        kwargs["address"] = address
    elif sim:
        kwargs["num_gpus"] = float(sim)
    import signal

    before = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ZsexpError(f"cannot join the Ray cluster at {address}: {exc}") from None
    if before not in (signal.SIG_DFL, signal.SIG_IGN, None):    # ray.init replaces it with sys.exit; the CLI's
        signal.signal(signal.SIGTERM, before)                   # handler stops the sweep resumably instead
    quiet_tune_logs()
    return True


def quiet_tune_logs() -> None:
    """Tune logs each failed trial's traceback on stderr; zsexp reports failures itself (progress lines,
    `zsexp status`, the MLflow child run's error tag, one error line), so those logs are kept off the
    console."""
    import logging

    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


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


def _resources(opts: dict[str, Any]) -> tuple[dict[str, float], int]:
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


# --------------------------------------------------------------------------- Tune objects
def _trainable(meta: dict[str, Any]):
    from ray import tune

    return tune.with_resources(tune.with_parameters(train_trial, meta=meta["trial_meta"]), meta["resources"])


def _callback(meta: dict[str, Any], space: SearchSpace):
    """The MLflow/progress callback of a new sweep (a resumed sweep gets its own back from Tune's state)."""
    from zsexp.search.callback import MlflowSweepCallback
    from zsexp.tracking import Progress

    progress = Progress(meta["name"], space.metric, space.mode, every_s=meta["progress_every_s"])
    return MlflowSweepCallback(
        tracking_uri=meta["tracking_uri"], experiment_id=meta["experiment_id"],
        parent_run_id=meta["parent_run_id"], sweep=meta["name"], metric_key=space.metric_key, mode=space.mode,
        max_rounds=space.max_rounds, params_of=functools.partial(trial_params, meta["trial_meta"]),
        flat_of=dict, progress=progress, common_tags=meta["tags"],
        state_file=str(Path(meta["dir"]) / CALLBACK_FILE))


def _scheduler(space: SearchSpace, name: str):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if name == "asha" and space.unit == "updates":       # rungs at equal optimiser updates
        return ASHAScheduler(time_attr=UPDATES_KEY, max_t=space.max_updates, grace_period=space.grace_updates,
                             reduction_factor=space.reduction_factor)
    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=space.max_rounds, grace_period=space.grace_rounds,
                             reduction_factor=space.reduction_factor)
    return FIFOScheduler()


# --------------------------------------------------------------------------- commands
def _finite(value: float, flag: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ZsexpError(f"{flag} must be a finite number, got {value!r}")
    return float(value)


def validate_options(o: SweepOptions) -> None:
    """Every value of a new sweep that cannot be meant, refused before anything starts or is written."""
    if not 1 <= o.trials <= MAX_TRIALS:
        raise ZsexpError(f"--trials must be between 1 and {MAX_TRIALS:,}, got {o.trials}")
    if _finite(o.gpus, "--gpus") < 0:
        raise ZsexpError(f"--gpus must be >= 0, got {o.gpus:g}")
    if o.gpus_per_trial is not None:
        _finite(o.gpus_per_trial, "--gpus-per-trial")
        if o.gpus == 0:
            raise ZsexpError(f"--gpus-per-trial {o.gpus_per_trial:g} needs a GPU budget: pass --gpus N (N > 0), or "
                             f"drop --gpus-per-trial for CPU trials")
        if not 0 < o.gpus_per_trial <= o.gpus:
            raise ZsexpError(f"--gpus-per-trial must be in (0, --gpus={o.gpus:g}], got {o.gpus_per_trial:g}")
    if _finite(o.cpus_per_trial, "--cpus-per-trial") <= 0:
        raise ZsexpError(f"--cpus-per-trial must be > 0, got {o.cpus_per_trial:g}")
    if o.max_concurrent is not None and o.max_concurrent < 1:
        raise ZsexpError(f"--max-concurrent must be >= 1, got {o.max_concurrent}")
    if o.retries < 0:
        raise ZsexpError(f"--retries must be >= 0, got {o.retries}")
    if o.max_failed_trials is not None and o.max_failed_trials < 0:
        raise ZsexpError(f"--max-failed-trials must be >= 0, got {o.max_failed_trials}")
    if o.keep_checkpoints is not None and o.keep_checkpoints < 1:
        raise ZsexpError(f"--keep-checkpoints must be >= 1 (or left out to keep all), got {o.keep_checkpoints}")
    if _finite(o.progress_every_s, "--progress-every") < 0:
        raise ZsexpError(f"--progress-every must be >= 0 seconds (0: a line on every event), got "
                         f"{o.progress_every_s:g}")
    if o.seed < 0 or o.data_seed < 0:
        raise ZsexpError(f"--seed and --data-seed must be >= 0, got {o.seed} and {o.data_seed}")
    if o.name is not None:
        check_name(o.name)
    if o.experiment is not None and not o.experiment.strip():
        raise ZsexpError("--experiment must not be empty")
    if o.scheduler is not None and o.scheduler not in ("asha", "none"):
        raise ZsexpError(f"--scheduler must be asha or none, got {o.scheduler!r}")
    from zsexp.models.common import resolve_device

    resolve_device(o.device)
    check_writable_root(sweeps_root(o.storage))


def prepare_space(o: SweepOptions) -> SearchSpace:
    """The search space with ``--set`` pinned and ``--sampler`` applied; its sampler built once (so an
    unknown sampler option is refused here)."""
    from zsexp.config import parse_set

    space = load_space(o.space, o.model)
    if o.sets:     # --set pins a key for every trial; a searched key becomes fixed
        pinned = parse_set(list(o.sets))
        raw = dict(space.raw)
        raw["fixed"] = {**(raw.get("fixed") or {}), **pinned}
        raw["params"] = {k: v for k, v in (raw.get("params") or {}).items() if k.split("[")[0] not in pinned}
        space = parse_space(raw, f"{space.source} + --set", o.model)
    if o.sampler:
        space = parse_space({**space.raw, "fixed": space.fixed, "sampler": {"name": o.sampler}}, space.source, o.model)
    try:
        space.make_sampler(o.seed)
    except (TypeError, ValueError) as exc:
        raise ZsexpError(f"{space.source}: `sampler` options {space.sampler_args} are not accepted by Optuna's "
                         f"{space.sampler} sampler ({exc})") from None
    if space.grid_size is not None and o.trials > space.grid_size:
        raise ZsexpError(f"{space.source}: the grid has {space.grid_size} points; --trials {o.trials} would repeat "
                         f"some: pass --trials {space.grid_size} (the whole grid) or fewer (a seeded subset)")
    return space


def run_sweep(o: SweepOptions) -> dict[str, Any]:
    """A new sweep.  Every check that can refuse it (options, space, data, name, storage, tracking store,
    Ray resources) runs before anything is written: a refused command leaves no sweep directory, no
    MLflow run and no registry entry.  The sweep is locked from then on (one writer), and a failure
    after the start closes its MLflow parent run FAILED with the reason."""
    import ray

    from zsexp.baselines import sweep_reference
    from zsexp.data import load_dataset
    from zsexp.models import require_discriminative_validation
    from zsexp.tracking import check_tracking_uri, client, git_commit, redact_uri

    validate_options(o)
    space = prepare_space(o)
    scheduler = o.scheduler or space.scheduler
    data = load_dataset(o.dataset, seed=o.data_seed)
    require_discriminative_validation(data)
    name = o.name or f"{o.model}-{data.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    d = sweep_dir(check_name(name, "sweep name (from the model and dataset; pass --name)"), o.storage)
    if (d / SWEEP_FILE).exists():
        raise ZsexpError(f"sweep {name!r} already exists at {d}; continue it with `zsexp resume {name}` "
                         f"or choose another --name")
    uri = o.tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)                                     # reachable, without creating a store yet
    reference = sweep_reference(o.model, data, space.fixed)      # validation classes only, like the trials
    opts = {"gpus": o.gpus, "gpus_per_trial": o.gpus_per_trial, "cpus_per_trial": o.cpus_per_trial,
            "max_concurrent": o.max_concurrent}
    started = _init_ray(o.address)
    try:
        resources = _resources(opts)                        # the cluster can run it: only now write anything
        with SweepLock(d.parent, name, "search"):
            if (d / SWEEP_FILE).exists():                   # another driver made it while we started Ray
                raise ZsexpError(f"sweep {name!r} already exists at {d}; continue it with `zsexp resume {name}` "
                                 f"or choose another --name")
            c = client(uri)
            experiment = o.experiment or f"zsexp-{o.model}-{data.name}"
            tags = {"zsexp.model": o.model, "zsexp.dataset": data.name, "zsexp.fingerprint": data.fingerprint(),
                    "zsexp.git_commit": git_commit(), "zsexp.storage": str(d)}
            meta = {
                "name": name, "dir": str(d), "model": o.model, "dataset": o.dataset, "dataset_name": data.name,
                "fingerprint": data.fingerprint(), "trials": o.trials, "scheduler": scheduler, "seed": o.seed,
                "space": space.raw | {"fixed": space.fixed}, "space_source": space.source,
                "tracking_uri": redact_uri(uri), "experiment": experiment, "tags": tags,
                "options": opts, "retries": o.retries, "max_failed_trials": o.max_failed_trials,
                "keep_checkpoints": o.keep_checkpoints, "reference": reference,
                "progress_every_s": o.progress_every_s, "created": dt.datetime.now().isoformat(),
                "status": "created",
                "trial_meta": {"model": o.model, "dataset": o.dataset, "data_seed": o.data_seed, "seed": o.seed,
                               "fixed": space.fixed, "fit_split": "train", "max_rounds": space.max_rounds,
                               "device": o.device, "sweep_dir": str(d)},
            }
            with failed_on_error(meta):
                _open_parent(c, meta, space, o)
                _write_json(d / SWEEP_FILE, meta)
                return _fit(meta, space, resources, restore=False)
    finally:
        if started:
            ray.shutdown()


def _open_parent(c: Any, meta: dict[str, Any], space: SearchSpace, o: SweepOptions) -> None:
    """The sweep's MLflow parent run (a start killed before it wrote the sweep file left at most this run
    behind: it is taken over), its parameters, search space and reference values; then the directory."""
    from mlflow.entities import Param

    from zsexp.tracking import TAG_KIND, TAG_SWEEP, ensure_experiment

    exp_id = ensure_experiment(c, meta["experiment"], meta["tracking_uri"])
    found = c.search_runs([exp_id], filter_string=f"tags.`{TAG_SWEEP}` = {filter_value(meta['name'])} and "
                                                  f"tags.`{TAG_KIND}` = 'sweep'", max_results=1)
    parent = found[0] if found else c.create_run(exp_id, run_name=meta["name"],
                                                 tags={**meta["tags"], TAG_SWEEP: meta["name"], TAG_KIND: "sweep"})
    meta.update(experiment_id=exp_id, parent_run_id=parent.info.run_id)
    Path(meta["dir"]).mkdir(parents=True, exist_ok=True)
    c.log_text(parent.info.run_id, json.dumps(space.raw, indent=2, default=str), "search_space.json")
    sweep_params = {"model": o.model, "dataset": o.dataset, "trials": o.trials, "scheduler": meta["scheduler"],
                    "sampler": space.sampler, "gpus": o.gpus, "gpus_per_trial": o.gpus_per_trial,
                    "objective": space.metric, "mode": space.mode, "max_rounds": space.max_rounds}
    c.log_batch(parent.info.run_id, params=[Param(k, str(v)) for k, v in sweep_params.items()])
    log_reference(c, parent.info.run_id, meta, space)


class failed_on_error:
    """Around a started sweep: an exception closes the MLflow parent run FAILED (reason as a tag) and
    marks the sweep ``failed`` in its metadata, instead of leaving both RUNNING for ever."""

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta

    def __enter__(self) -> failed_on_error:
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None:
            return False
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        reason = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
        if "parent_run_id" not in self.meta:
            return False
        try:
            from mlflow.tracking import MlflowClient

            from zsexp.tracking import TAG_ERROR

            c = MlflowClient(tracking_uri=self.meta["tracking_uri"])
            c.set_tag(self.meta["parent_run_id"], TAG_ERROR, reason)
            c.set_terminated(self.meta["parent_run_id"], status)
        except Exception:  # noqa: BLE001 - the tracking store itself may be what failed
            pass
        d = Path(self.meta["dir"])
        if (d / SWEEP_FILE).is_file():
            self.meta["status"] = "interrupted" if status == "KILLED" else "failed"
            _write_json(d / SWEEP_FILE, {k: v for k, v in self.meta.items() if k != "resources"})
        return False


def resume_sweep(name: str, storage: str | None = None, address: str | None = None,
                 retry_errored: bool = False, trust_storage: bool = False) -> dict[str, Any]:
    import ray

    from zsexp.tracking import check_tracking_uri, client

    meta = read_meta(name, storage)
    space = parse_space(meta["space"], meta["space_source"], meta["model"])
    check_tracking_uri(meta["tracking_uri"])
    d = Path(meta["dir"])
    with SweepLock(d.parent, name, "resume"):
        notes = recover_snapshot(d, name, trust_storage)       # before Ray: nothing unverified is ever loaded
        started = _init_ray(address)
        try:
            resources = _resources(meta["options"])
            c = client(meta["tracking_uri"])
            c.update_run(meta["parent_run_id"], status="RUNNING")           # reopen the parent run
            meta["trial_meta"]["retry_errored"] = retry_errored
            with failed_on_error(meta):
                return _fit(meta, space, resources, restore=True, retry_errored=retry_errored, notes=notes)
        finally:
            if started:
                ray.shutdown()


# --------------------------------------------------------------------------- resume reconciliation
STATE_FILES = ("experiment_state-{}.json", "search_gen_state-{}.json", "searcher-state-{}.pkl",
               "callback-states-{}.pkl")


def recover_snapshot(d: Path, name: str, trust_storage: bool = False) -> list[str]:
    """Make Tune's newest snapshot safe and loadable before anything loads it.

    Every file Tune would unpickle must verify against the driver's signature record
    (:mod:`zsexp.search.integrity`); a planted or modified one is refused.  Tune writes its snapshot in
    a local staging directory and copies it to storage in the background, once per step; a driver
    killed during that copy leaves files cut short in storage.  A cut file is taken again from the
    staging copy when this machine still has it and its digest is the recorded one (Ray keeps it
    under its temp dir, ``session_*/artifacts/*/NAME/driver_artifacts``); otherwise the whole session's
    snapshot is set aside and Tune restores the previous one.  Without any snapshot nothing is checked:
    the fresh start deletes Tune's files unread."""
    import glob
    import shutil
    import tempfile

    if trust_storage:
        integrity.trust(d)
    ray_tmp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    notes: list[str] = []
    while sorted(d.glob("experiment_state-*.json")):
        cut = integrity.check(d)
        for f in cut:
            rel = f.relative_to(d).as_posix()
            staged = sorted(glob.glob(str(ray_tmp / "session_*" / "artifacts" / "*" / name / "driver_artifacts" /
                                          rel)), key=os.path.getmtime, reverse=True)
            signed = integrity.signed_digests(d).get(rel, [])
            for cand in staged:
                if integrity.digest(Path(cand)) in signed:
                    shutil.copyfile(cand, f)
                    notes.append(f"{f.name} taken from the driver's staging copy")
                    break
        cut = integrity.check(d)
        if not cut:
            return notes
        session = sorted(d.glob("experiment_state-*.json"))[-1].stem[len("experiment_state-"):]
        files = [d / t.format(session) for t in STATE_FILES if (d / t.format(session)).exists()]
        stray = [f for f in cut if f not in files]
        if stray:
            raise ZsexpError(f"{stray[0]}: cut short and not part of Tune's newest snapshot; move it away (it is not "
                             f"loaded) and resume again")
        for f in files:
            f.rename(f.with_name(f.name + ".unreadable"))
            notes.append(f"{f.name} set aside (cut short)")
    return notes


def _snapshot_trial_ids(d: Path) -> set[str] | None:
    """Trial ids in the newest Tune snapshot (None: there is none)."""
    states = sorted(d.glob("experiment_state-*.json"))
    if not states:
        return None
    state = json.loads(states[-1].read_text())
    return {json.loads(t[0])["trial_id"] for t in state.get("trial_data", [])}


def reconcile(meta: dict[str, Any], known: set[str], retry_errored: bool) -> dict[str, Any]:
    """Before Tune restarts: drop what the driver logged for trials Tune's snapshot never saw.

    Such a trial was created in the last moments before the kill (the snapshot is taken every
    controller step); Tune will not run it.  Its MLflow child run, unless finished, is deleted, and
    its entries leave the durable progress record; the searcher fails its Optuna trial on restore.
    With ``--retry-errored`` the failed trials' outcomes and markers are cleared so they run again."""
    from zsexp.search.callback import trial_marker, write_json_atomic
    from zsexp.tracking import TAG_TRIAL, client
    from zsexp.ui_links import sweep_filter

    d = Path(meta["dir"])
    c = client(meta["tracking_uri"])
    runs = c.search_runs([meta["experiment_id"]], filter_string=sweep_filter(meta["name"]), max_results=10000)
    deleted, kept_orphans = [], []
    for run in runs:
        tid = run.data.tags.get(TAG_TRIAL)
        if tid in known:
            continue
        if run.info.status == "FINISHED":
            kept_orphans.append(tid)
        else:
            c.delete_run(run.info.run_id)
            deleted.append(tid)
    progress = read_progress(d)
    if progress:
        drop = set(progress.get("runs", {})) - known - set(kept_orphans)
        if retry_errored:
            drop_failed = {t for t, o in progress.get("outcomes", {}).items() if o == "failed"}
            for t in drop_failed:
                progress["outcomes"].pop(t, None)
                try:
                    trial_marker(d, t).unlink(missing_ok=True)
                except ValueError:                    # not a trial id (an edited record): nothing to remove
                    pass
        for key in ("runs", "best_ckpt", "outcomes", "logged_step", "pending"):
            for t in drop:
                progress.get(key, {}).pop(t, None)
        write_json_atomic(d / CALLBACK_FILE, progress)
    return {"deleted_runs": deleted, "finished_unknown": kept_orphans}


def _fit(meta: dict[str, Any], space: SearchSpace, resources: tuple[dict[str, float], int], restore: bool,
         retry_errored: bool = False, notes: list[str] | None = None) -> dict[str, Any]:
    from ray import tune

    from zsexp.search.optuna_search import ResumableOptunaSearch, journal_storage
    from zsexp.search.stopper import FailureBudget
    from zsexp.tracking import client

    # Tune snapshots its experiment state (trials, searcher, callback) at the end of every controller
    # step, not on a time budget: `zsexp resume` restarts from it, and the driver's own durable record
    # (progress file, trial markers, the Optuna journal) covers the step in flight at a kill.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    d = Path(meta["dir"])
    res, concurrency = resources
    meta["resources"] = res
    trainable = _trainable(meta)
    print(f"[{meta['name']}] {meta['model']} on {meta['dataset_name']}: {meta['trials']} trials, up to "
          f"{concurrency} at once ({', '.join(f'{k}={v:g}' for k, v in res.items())} each), "
          f"objective val {space.metric} ({space.mode}), scheduler {meta['scheduler']}, sampler {space.sampler}")
    print(f"[{meta['name']}] storage {d}; MLflow {meta['tracking_uri']} experiment {meta['experiment']!r}, "
          f"parent run {meta['parent_run_id']}")
    if restore:
        if notes:
            print(f"[{meta['name']}] Tune's snapshot was cut by the kill: {'; '.join(notes)}")
        known = _snapshot_trial_ids(d)
        rec = reconcile(meta, known or set(), retry_errored)
        if rec["deleted_runs"]:
            print(f"[{meta['name']}] {len(rec['deleted_runs'])} trial(s) started just before the interruption were "
                  f"never saved by Tune; their unfinished MLflow runs were removed")
        if rec["finished_unknown"]:
            print(f"[{meta['name']}] warning: finished trial(s) {rec['finished_unknown']} are missing from Tune's "
                  f"snapshot; their MLflow runs are kept")
    if restore and known is not None and tune.Tuner.can_restore(str(d)):
        tuner = tune.Tuner.restore(str(d), trainable=trainable, resume_unfinished=True,
                                   resume_errored=retry_errored, restart_errored=False)
    else:
        if restore:   # killed before Tune's first snapshot: start the sweep's Tune run afresh
            print(f"[{meta['name']}] no Tune snapshot yet (interrupted during start-up): starting the trials afresh")
            for f in d.glob("*"):
                if f.name not in (SWEEP_FILE, "optuna_journal.log") and f.is_file():
                    f.unlink()
        callback = _callback(meta, space)
        searcher = ResumableOptunaSearch(space=space.distributions(), metric=space.metric_key, mode=space.mode,
                                         sampler=space.make_sampler(meta["seed"]), storage=journal_storage(d),
                                         study_name=meta["name"])
        searcher.total_trials = meta["trials"]
        if restore:
            searcher.lost, searcher.finished_elsewhere = _fail_running_optuna_trials(d, meta["name"])
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(metric=space.metric_key, mode=space.mode, search_alg=searcher,
                                        scheduler=_scheduler(space, meta["scheduler"]),
                                        num_samples=meta["trials"], max_concurrent_trials=concurrency,
                                        # a trial reuses a finished trial's worker process: no new
                                        # Python, torch import and dataset build per trial
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=meta["name"], storage_path=str(d.parent), callbacks=[callback], verbose=0,
                stop=FailureBudget(callback, meta["max_failed_trials"]),
                failure_config=tune.FailureConfig(max_failures=meta["retries"]),
                # Every checkpoint is kept by default: Tune's snapshot may point at a checkpoint that a
                # `num_to_keep` policy deleted since, and the trial would then fail to resume
                # (ray-project/ray#27790).  --keep-checkpoints N trades that safety for disk.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=meta.get("keep_checkpoints"),
                                                        checkpoint_score_attribute=space.metric_key,
                                                        checkpoint_score_order=space.mode)))
    meta["status"] = "running"
    _write_json(d / SWEEP_FILE, {k: v for k, v in meta.items() if k != "resources"})
    integrity.record(d, {"tuner.pkl": d / "tuner.pkl"})       # Tune wrote it just now, in this process
    kill_point("startup")
    t0 = time.time()
    results = tuner.fit()
    kill_point("summary")
    summary = summarise(meta, space, results, time.time() - t0)
    done = summary["counts"].get("TERMINATED", 0) + summary["counts"].get("ERROR", 0)
    complete = done + len(rec["finished_unknown"] if restore else []) >= meta["trials"]
    n_failed = list(summary["outcomes"].values()).count("failed")
    budget_stop = meta.get("max_failed_trials") is not None and n_failed > meta["max_failed_trials"]
    try:
        c = client(meta["tracking_uri"])
        if summary.get("best"):
            c.log_metric(meta["parent_run_id"], f"best_{space.metric_key}", summary["best"]["value"])
            if summary.get("margin") is not None:
                c.log_metric(meta["parent_run_id"], "best_margin_over_baseline", summary["margin"])
            c.set_tag(meta["parent_run_id"], "zsexp.best_trial", summary["best"]["trial_id"])
        outcomes = list(summary["outcomes"].values())
        for key, label in (("trials_completed", "completed"), ("trials_early_stopped", "early-stopped"),
                           ("trials_failed", "failed")):
            c.log_metric(meta["parent_run_id"], key, outcomes.count(label))
        c.set_terminated(meta["parent_run_id"], "FINISHED" if complete or budget_stop else "KILLED")
    except ZsexpError as exc:
        print(f"[{meta['name']}] the sweep finished but its MLflow parent run could not be closed ({exc}); "
              f"run `zsexp resume {meta['name']}` when the tracking server answers")
    meta["status"] = "finished" if complete else "stopped" if budget_stop else "interrupted"
    _write_json(d / SWEEP_FILE, {k: v for k, v in meta.items() if k != "resources"})
    print_summary(meta, space, summary)
    summary["complete"] = complete or budget_stop
    if complete and summary["n_trials"] and n_failed == summary["n_trials"]:
        first = next((r.error for r in results if r.error), None)
        why = str(first).strip().splitlines()[-1][:300] if first else "see `zsexp status`"
        raise ZsexpError(f"every one of the sweep's {n_failed} trials failed (last line of the first error: {why}); "
                         f"`zsexp status {meta['name']}` lists them, the MLflow child runs hold each error")
    if budget_stop and not complete:
        print(f"[{meta['name']}] stopped: {n_failed} trials failed, more than --max-failed-trials "
              f"{meta['max_failed_trials']}")
    elif not complete:
        print(f"[{meta['name']}] interrupted after {summary['n_trials']} of {meta['trials']} trials; "
              f"continue with `zsexp resume {meta['name']}`")
    return summary


def _fail_running_optuna_trials(d: Path, study_name: str) -> tuple[list[str], int]:
    """A restart without a usable Tune snapshot: no trial of the study is known to Tune."""
    from zsexp.search.optuna_search import journal_storage, reconcile_study

    try:
        study = optuna.load_study(study_name=study_name, storage=journal_storage(d))
    except KeyError:
        return [], 0
    return reconcile_study(study, known=set())


def summarise(meta: dict[str, Any], space: SearchSpace, results: Any, wall_s: float) -> dict[str, Any]:
    """Counts, outcomes and the best trial.  The best trial and its best round come from the driver's
    durable record (the same best-round values Optuna was told): a trial's ``progress.csv`` in
    storage can be cut short by a kill, and a finished trial that Tune restarted ends without
    reporting again."""
    counts: dict[str, int] = {}
    by_id: dict[str, Any] = {}
    for r in results:
        status = "ERROR" if r.error else "TERMINATED"
        counts[status] = counts.get(status, 0) + 1
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name.split("_")[2]
        by_id[tid] = r
    progress = read_progress(meta["dir"])
    values = {t: v for t, v in progress.get("best_ckpt", {}).items() if t in by_id and v.get("value") is not None}
    best = None
    if values:
        sign = 1.0 if space.mode == "max" else -1.0
        tid = max(values, key=lambda t: sign * values[t]["value"])
        r, rnd = by_id[tid], int(values[tid]["round"])
        ckpt, metrics = r.checkpoint, {}
        for c, m in r.best_checkpoints or []:
            if int(m.get("training_iteration", -1)) == rnd:
                ckpt, metrics = c, m
        best = {"trial_id": tid, "value": float(values[tid]["value"]), "round": rnd, "config": r.config,
                "checkpoint": ckpt.path if ckpt else None, "run_id": progress.get("runs", {}).get(tid),
                "metrics": {k: v for k, v in metrics.items() if str(k).startswith("val_")}}
    base, chance = reference_values(meta, space)
    return {"name": meta["name"], "counts": counts, "outcomes": progress.get("outcomes", {}), "best": best,
            "peak_concurrency": progress.get("peak", 0), "wall_s": wall_s, "n_trials": len(results),
            "baseline": base, "chance": chance,
            "margin": margin(best["value"] if best else None, base["value"] if base else None, space.mode)}


def reference_values(meta: dict[str, Any], space: SearchSpace) -> tuple[dict | None, float | None]:
    """The baseline's validation objective (``{"model", "lam", "value"}``, None where the task has none or
    the sweep predates baselines) and chance of the objective, from the sweep's stored reference."""
    ref = meta.get("reference") or {}
    b = ref.get("baseline")
    value = (b.get("val") or {}).get(space.metric) if b else None
    base = {"model": b["model"], "lam": b["lam"], "value": float(value)} if value is not None else None
    chance = (ref.get("chance") or {}).get(space.metric)
    return base, (float(chance) if chance is not None else None)


def reference_line(meta: dict[str, Any], space: SearchSpace, best: float | None) -> str:
    """``baseline ridge (lam=0.1) val precision@50=39.00; best trial +2.30 over it; chance 16.67``."""
    base, chance = reference_values(meta, space)
    parts = []
    if base:
        parts.append(f"baseline {base['model']} (lam={base['lam']:g}) val {space.metric}={base['value']:.3f}")
        m = margin(best, base["value"], space.mode)
        if m is not None:
            parts.append(f"best trial {m:+.3f} {'over' if m >= 0 else 'BELOW'} it")
    elif (meta.get("reference") or {}).get("error"):
        parts.append(meta["reference"]["error"])
    elif meta.get("reference") is None:
        parts.append("no baseline recorded (sweep made before zsexp computed baselines)")
    else:
        parts.append(f"no baseline for val {space.metric}")
    if chance is not None:
        parts.append(f"chance {chance:.3f}")
    return "; ".join(parts)


def log_reference(c: Any, run_id: str, meta: dict[str, Any], space: SearchSpace) -> None:
    """The baseline's and chance's validation objective on the sweep's MLflow parent run."""
    base, chance = reference_values(meta, space)
    if base:
        c.log_metric(run_id, f"baseline_{space.metric_key}", base["value"])
        c.set_tag(run_id, "zsexp.baseline", f"{base['model']} lam={base['lam']:g} "
                                            f"({meta['reference']['baseline']['chosen_by']})")
    if chance is not None:
        c.log_metric(run_id, f"chance_{space.metric_key}", chance)


def print_summary(meta: dict[str, Any], space: SearchSpace, s: dict[str, Any]) -> None:
    oc = list(s["outcomes"].values())
    print(f"[{meta['name']}] finished in {s['wall_s']:.1f}s: {s['n_trials']} trials "
          f"({oc.count('completed')} completed, {oc.count('early-stopped')} early-stopped, {oc.count('failed')} "
          f"failed); peak concurrency {s['peak_concurrency']}")
    b = s.get("best")
    if not b:
        print(f"[{meta['name']}] no trial reported {space.metric}")
        return
    print(f"[{meta['name']}] best trial {b['trial_id']}: val {space.metric}={b['value']:.3f} at round {b['round']}")
    print("    config: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(b["config"].items())))
    print(f"    checkpoint: {b['checkpoint']}")
    print(f"    MLflow run: {b['run_id']} (parent {meta['parent_run_id']}, experiment {meta['experiment']!r})")
    print(f"    reference: {reference_line(meta, space, b['value'])}")
    show_links(meta, space)


def show_links(meta: dict[str, Any], space: SearchSpace, ui: str | None = None) -> None:
    """Print the two MLflow UI links of the sweep's trials (a tracking outage only skips them)."""
    from zsexp.ui_links import DEFAULT_UI, print_links, sweep_links

    try:
        links = sweep_links(meta, space.metric_key, space.mode, sorted(space.params), ui or DEFAULT_UI)
    except Exception as exc:  # noqa: BLE001 - links are a convenience; never fail a command for them
        print(f"[{meta['name']}] (no MLflow UI links: {str(exc).splitlines()[0][:200]})")
        return
    print_links(meta["name"], links)


def read_progress(sweep_dir: str | Path) -> dict[str, Any]:
    """The driver callback's mirrored state (runs, outcomes, best values, peak), or {} before the first trial."""
    pf = Path(sweep_dir) / CALLBACK_FILE
    return json.loads(pf.read_text()) if pf.is_file() else {}


def sweep_trials(meta: dict[str, Any], space: SearchSpace) -> list[dict[str, Any]]:
    """Every trial of the sweep in Tune's order: id, status, rounds, best validation value, outcome, config."""
    from ray.tune import ExperimentAnalysis

    progress = read_progress(meta["dir"])
    ea = ExperimentAnalysis(str(meta["dir"]), default_metric=space.metric_key, default_mode=space.mode)
    return [{"trial_id": t.trial_id, "status": t.status,
             "rounds": int(t.last_result.get("training_iteration", 0) or 0),
             "best": progress.get("best_ckpt", {}).get(t.trial_id, {}).get("value"),
             "best_round": progress.get("best_ckpt", {}).get(t.trial_id, {}).get("round"),
             "outcome": progress.get("outcomes", {}).get(t.trial_id), "config": t.config} for t in ea.trials]


def list_sweeps(storage: str | None = None) -> list[dict[str, Any]]:
    """Every sweep under ``storage`` (read-only), oldest first: what ``zsexp status`` without a name shows.
    A sweep whose metadata cannot be read is listed with the reason instead of hiding the others."""
    rows = []
    for name in sweep_names(storage):
        try:
            st = sweep_status(name, storage)
        except Exception as exc:  # noqa: BLE001 - one broken sweep must not hide the rest
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        m, trials = st["meta"], st["trials"]
        rows.append({"name": m["name"], "model": m["model"], "dataset": m["dataset_name"], "status": m["status"],
                     "created": m.get("created", ""), "trials": m["trials"],
                     "finished": sum(t["status"] in ("TERMINATED", "ERROR") for t in trials),
                     "metric": st["metric"], "mode": st["mode"], "best": st["best"],
                     "baseline": (st["baseline"] or {}).get("value"), "margin": st["margin"], "chance": st["chance"]})
    rows.sort(key=lambda r: r.get("created", ""))
    return rows


def sweep_status(name: str, storage: str | None = None, trust_storage: bool = False) -> dict[str, Any]:
    """Read-only: the sweep's metadata, every trial's state and its best validation value.  Tune's state
    is read only once verified (:mod:`zsexp.search.integrity`); a snapshot cut by a kill shows no trials."""
    meta = read_meta(name, storage)
    space = parse_space(meta["space"], meta["space_source"], meta["model"])
    if trust_storage:
        integrity.trust(Path(meta["dir"]))
    cut = integrity.check(Path(meta["dir"]))
    try:
        trials = [] if cut else sweep_trials(meta, space)
    except Exception:  # noqa: BLE001 - no experiment state yet
        trials = []
    bests = [t["best"] for t in trials if t["best"] is not None]
    best = (max(bests) if space.mode == "max" else min(bests)) if bests else None
    base, chance = reference_values(meta, space)
    return {"meta": meta, "metric": space.metric, "mode": space.mode, "trials": trials, "best": best,
            "baseline": base, "chance": chance, "margin": margin(best, base["value"] if base else None, space.mode),
            "reference": reference_line(meta, space, best)}
