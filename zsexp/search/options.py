"""What a sweep is asked for: ``zsexp search``'s options, each declared once (``zsexp.options``), and
the check of a new sweep's values before anything starts or is written."""

from __future__ import annotations

from dataclasses import dataclass

from zsexp import options as opt
from zsexp.errors import ZsexpError
from zsexp.options import option

MAX_TRIALS = 100_000         # a sweep's documented cap: beyond it the driver's own records grow unwieldy
SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp", "grid")


@dataclass
class SweepOptions:
    model: str = opt.model()
    space: str | None = option(help="search-space YAML (default search_spaces/MODEL.yaml)")
    dataset: str = opt.dataset()
    trials: int = option(8, kind=int, help="number of trials (default %(default)s, at most 100,000)")
    gpus: float = option(0.0, **opt.GPUS, help="the sweep's total GPU budget (default 0: CPU trials)")
    gpus_per_trial: float | None = option(**opt.GPU_SHARE, help="GPU fraction per trial (default 1; needs --gpus)")
    cpus_per_trial: float = option(1.0, **opt.CPUS, help="CPUs per trial (default %(default)s)")
    max_concurrent: int | None = option(**opt.CONCURRENT,
                                        help="cap on trials at once (default: what resources allow)")
    sampler: str | None = option(choices=SAMPLERS, help="override the space's sampler (grid: every param categorical)")
    scheduler: str | None = option(choices=("asha", "none"), help="override the space's scheduler")
    seed: int = option(0, **opt.SEED, help="sampler and model seed (default %(default)s)")
    data_seed: int = option(0, **opt.SEED, help="seed of a synthetic dataset or of the UCI digits' class split "
                                                "(default %(default)s)")
    name: str | None = option(help="sweep name (default MODEL-DATASET-TIMESTAMP)")
    storage: str | None = opt.storage()
    address: str | None = opt.address()
    tracking_uri: str | None = opt.tracking_uri()
    experiment: str | None = option(help="MLflow experiment (default zsexp-MODEL-DATASET)")
    sets: tuple[str, ...] = opt.sets()
    retries: int = option(2, kind=int, low=0, high=100,
                          help="times a trial whose worker died is retried from its checkpoint (default %(default)s; "
                               "a diverged trial is not retried)")
    max_failed_trials: int | None = option(**opt.COUNT, help="stop the sweep once more trials than this failed")
    keep_checkpoints: int | None = option(**opt.COUNT,
                                          help="keep only the N best checkpoints per trial (default: all; with N, a "
                                               "killed sweep may find its last checkpoint deleted, "
                                               "ray-project/ray#27790)")
    device: str = opt.device()
    progress_every_s: float = option(5.0, **opt.SECONDS, flag="--progress-every", metavar="S",
                                     help="seconds between progress lines (default %(default)s)")
    warm_start: str | None = option(metavar="SWEEP",
                                    help="start the sampler from an earlier sweep's completed trials (a sweep of the "
                                         "same --storage; same model, dataset fingerprint and objective; the space "
                                         "may differ): those inside this space are given to Optuna as finished "
                                         "trials, not re-run and not counted in --trials; the others are listed as "
                                         "skipped")


def validate_options(o: SweepOptions) -> None:
    """Every value of a new sweep that cannot be meant, refused before anything starts or is written."""
    from zsexp.models.common import resolve_device
    from zsexp.names import check_name
    from zsexp.search.cluster import finite, validate_resources
    from zsexp.search.storage import check_writable_root, sweeps_root

    if not 1 <= o.trials <= MAX_TRIALS:
        raise ZsexpError(f"--trials must be between 1 and {MAX_TRIALS:,}, got {o.trials}")
    validate_resources(o.gpus, o.gpus_per_trial, o.cpus_per_trial, o.max_concurrent)
    if o.retries < 0:
        raise ZsexpError(f"--retries must be >= 0, got {o.retries}")
    if o.max_failed_trials is not None and o.max_failed_trials < 0:
        raise ZsexpError(f"--max-failed-trials must be >= 0, got {o.max_failed_trials}")
    if o.keep_checkpoints is not None and o.keep_checkpoints < 1:
        raise ZsexpError(f"--keep-checkpoints must be >= 1 (or left out to keep all), got {o.keep_checkpoints}")
    if finite(o.progress_every_s, "--progress-every") < 0:
        raise ZsexpError(f"--progress-every must be >= 0 seconds (0: a line on every event), got "
                         f"{o.progress_every_s:g}")
    if o.seed < 0 or o.data_seed < 0:
        raise ZsexpError(f"--seed and --data-seed must be >= 0, got {o.seed} and {o.data_seed}")
    if o.name is not None:
        check_name(o.name)
    if o.warm_start is not None:
        check_name(o.warm_start, "--warm-start sweep name")
    if o.experiment is not None and not o.experiment.strip():
        raise ZsexpError("--experiment must not be empty")
    if o.scheduler is not None and o.scheduler not in ("asha", "none"):
        raise ZsexpError(f"--scheduler must be asha or none, got {o.scheduler!r}")
    resolve_device(o.device)
    check_writable_root(sweeps_root(o.storage))


