"""Ray job entrypoint for the final selection: `ray job submit -- python jobs/select_job.py`.

ZSEXP_SWEEP_NAME (required), ZSEXP_STORAGE, ZSEXP_K, ZSEXP_SEEDS, ZSEXP_REGISTER_AS.  Re-submitting
the job skips the configuration x seed runs that already finished.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from job_env import default_storage, env, run  # noqa: E402


def argv() -> list[str]:
    args = ["select", env("ZSEXP_SWEEP_NAME", required=True),
            "--storage", env("ZSEXP_STORAGE", default_storage("sweeps")),
            "--k", env("ZSEXP_K", "5"), "--seeds", env("ZSEXP_SEEDS", "5"),
            "--address", os.environ.get("RAY_ADDRESS", "auto")]
    if os.environ.get("ZSEXP_REGISTER_AS"):
        args += ["--register-as", os.environ["ZSEXP_REGISTER_AS"]]
    return args


if __name__ == "__main__":
    sys.exit(run(argv()))
