"""What an ablation job is asked for: ``zsexp ablate``'s options, each declared once (``zsexp.options``)."""

from __future__ import annotations

from dataclasses import dataclass

from zsexp import options as opt
from zsexp.options import option


@dataclass
class AblateOptions:
    model: str = opt.model(" with a paper ablation table (zscrgan, cmgan)")
    dataset: str | None = opt.dataset(None, "synthetic-tiny, or the --from sweep's")
    source: str | None = option(flag="--from", metavar="SWEEP",
                                help="start from this sweep's winner (its final selection's, else its best trial) "
                                     "and budget")
    variants: str = option("table", help="`table` (default) or comma-separated names: ablation values (no_gan, "
                                         "conse, ...) or KEY=VALUE (training=joint, wrong_class=kmeans, "
                                         "mode=sentence); see --list-variants")
    seeds: int = option(3, kind=int, low=0, high=1_000, help="model seeds per row and split (default %(default)s)")
    data_seeds: tuple[int, ...] | None = option(**opt.SEED, many=True, metavar="S",
                                                help="data splits (seeds of a synthetic set or of the UCI digits' "
                                                     "class split; default 0, or the --from sweep's)")
    sets: tuple[str, ...] = opt.sets("fix a config key of the base configuration")
    config_file: str | None = option(flag="--config", metavar="FILE",
                                     help="YAML file of config keys for the base configuration")
    name: str | None = option(help="the job's name (default MODEL-DATASET-ablation[-from-SWEEP]); the same name "
                                   "resumes it")
    storage: str | None = opt.storage("ablations")
    sweep_storage: str | None = option(help="where the --from sweep lives (default $ZSEXP_HOME/sweeps)")
    address: str | None = opt.address()
    gpus: float | None = option(**opt.GPUS, help="GPU budget (default 0, or the --from sweep's)")
    gpus_per_trial: float | None = option(**opt.GPU_SHARE, help="GPU fraction per run (default 1 with --gpus)")
    cpus_per_trial: float | None = option(**opt.CPUS, help="CPUs per run (default 1, or the sweep's)")
    max_concurrent: int | None = option(**opt.CONCURRENT, help="cap on runs at once")
    tracking_uri: str | None = opt.tracking_uri(", or the sweep's")
    experiment: str | None = option(help="MLflow experiment (default zsexp-MODEL-DATASET, or the sweep's)")
    device: str = opt.device()
