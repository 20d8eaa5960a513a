"""`zsexp status`: read-only, cheap at any sweep size -- Tune's snapshot read as JSON, no torch, Ray or
MLflow in the process, the UI links from the durable record."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import cli_env, copy_home

PROBE = """
import sys
from zsexp.cli import main
rc = main(["status", "base"])
print("LOADED", sorted(m for m in ("torch", "ray", "mlflow", "optuna") if m in sys.modules))
sys.exit(rc)
"""


def test_status_loads_no_heavy_library_and_links_the_trials(template, tmp_path):
    h = copy_home(template, tmp_path)
    res = subprocess.run([sys.executable, "-c", PROBE], env=cli_env(h), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "LOADED []" in res.stdout, res.stdout[-500:]
    assert "TERMINATED" in res.stdout and "compare: http" in res.stdout and "trials:  http" in res.stdout
    st = subprocess.run([sys.executable, "-m", "zsexp.cli", "status", "base", "--json"], env=cli_env(h),
                        capture_output=True, text=True, timeout=120)
    trials = json.loads(st.stdout)["trials"]
    assert len(trials) == 1 and trials[0]["rounds"] == 1 and trials[0]["outcome"] == "completed"
    assert trials[0]["config"] and trials[0]["best"] is not None
