"""Ray job entrypoint for a sweep: `ray job submit -- python jobs/sweep_job.py` (or a KubeRay RayJob).

Settings come from environment variables, so one manifest template serves every sweep:
ZSEXP_MODEL (required), ZSEXP_DATASET, ZSEXP_TRIALS, ZSEXP_GPUS, ZSEXP_GPUS_PER_TRIAL,
ZSEXP_CPUS_PER_TRIAL, ZSEXP_SWEEP_NAME, ZSEXP_STORAGE (an object store, s3://BUCKET/PREFIX, or a
path every node shares; default ZSEXP_STATE_URI/sweeps, else ZSEXP_HOME/sweeps), ZSEXP_SPACE,
ZSEXP_EXTRA (more `zsexp search` arguments).  The driver joins the cluster it runs in (RAY_ADDRESS,
set by Ray for jobs; `auto` otherwise).  With ZSEXP_RESUME=1 an existing sweep of that name is
resumed instead, so a resubmitted job continues where the last one stopped.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from job_env import default_storage, env, run, sweep_exists  # noqa: E402


def argv() -> list[str]:
    name = env("ZSEXP_SWEEP_NAME", required=True)
    address = os.environ.get("RAY_ADDRESS", "auto")
    storage = env("ZSEXP_STORAGE", default_storage("sweeps"))
    if os.environ.get("ZSEXP_RESUME") == "1" and sweep_exists(storage, name):
        return ["resume", name, "--storage", storage, "--address", address]
    gpus = env("ZSEXP_GPUS", "0")
    args = ["search", env("ZSEXP_MODEL", required=True), "--dataset", env("ZSEXP_DATASET", "synthetic-tiny"),
            "--trials", env("ZSEXP_TRIALS", "16"), "--gpus", gpus,
            "--cpus-per-trial", env("ZSEXP_CPUS_PER_TRIAL", "1"),
            "--name", name, "--storage", storage, "--address", address]
    if float(gpus) > 0:          # a GPU share means nothing without a GPU budget (and is refused)
        args += ["--gpus-per-trial", env("ZSEXP_GPUS_PER_TRIAL", "1")]
    if os.environ.get("ZSEXP_SPACE"):
        args += ["--space", os.environ["ZSEXP_SPACE"]]
    return args + shlex.split(os.environ.get("ZSEXP_EXTRA", ""))


if __name__ == "__main__":
    sys.exit(run(argv()))
