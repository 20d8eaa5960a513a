"""Ray job entrypoint for an ablation: `ray job submit -- python jobs/ablate_job.py` (or a KubeRay RayJob).

ZSEXP_MODEL (required), ZSEXP_DATASET, ZSEXP_FROM (a finished sweep: start from its winner),
ZSEXP_VARIANTS (default `table`), ZSEXP_SEEDS, ZSEXP_DATA_SEEDS (space-separated), ZSEXP_GPUS,
ZSEXP_GPUS_PER_TRIAL, ZSEXP_ABLATION_NAME, ZSEXP_STORAGE (where ablations live: an object store or a
path every node shares; default ZSEXP_STATE_URI/ablations), ZSEXP_SWEEP_STORAGE (where the sweep lives),
ZSEXP_EXTRA (more `zsexp ablate` arguments).
Re-submitting the same job skips the runs that already finished.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from job_env import default_storage, env, run  # noqa: E402


def argv() -> list[str]:
    args = ["ablate", env("ZSEXP_MODEL", required=True), "--variants", env("ZSEXP_VARIANTS", "table"),
            "--seeds", env("ZSEXP_SEEDS", "3"), "--storage", env("ZSEXP_STORAGE", default_storage("ablations")),
            "--address", os.environ.get("RAY_ADDRESS", "auto")]
    if os.environ.get("ZSEXP_FROM"):
        args += ["--from", os.environ["ZSEXP_FROM"],
                 "--sweep-storage", env("ZSEXP_SWEEP_STORAGE", default_storage("sweeps"))]
    elif os.environ.get("ZSEXP_DATASET"):
        args += ["--dataset", os.environ["ZSEXP_DATASET"]]
    if os.environ.get("ZSEXP_DATA_SEEDS"):
        args += ["--data-seeds", *os.environ["ZSEXP_DATA_SEEDS"].split()]
    if os.environ.get("ZSEXP_ABLATION_NAME"):
        args += ["--name", os.environ["ZSEXP_ABLATION_NAME"]]
    gpus = os.environ.get("ZSEXP_GPUS")
    if gpus:
        args += ["--gpus", gpus]
        if float(gpus) > 0:
            args += ["--gpus-per-trial", env("ZSEXP_GPUS_PER_TRIAL", "1")]
    return args + shlex.split(os.environ.get("ZSEXP_EXTRA", ""))


if __name__ == "__main__":
    sys.exit(run(argv()))
