"""What a trial spends, as first-class metrics: wall seconds, CPU-seconds and GPU-seconds.

* ``compute_wall_s``: elapsed time in the trial's process, each round from the end of the previous
  report (or the trial's start: loading its data and building its model count) to this one: training,
  validation, the checkpoint;
* ``compute_cpu_s``: the trial process's CPU time over the same spans (every thread: torch's intra-op
  threads count);
* ``compute_gpu_s``: the GPU fraction Ray granted the trial times its wall time (what it held, used or
  not), so 0 on a CPU-only sweep.

A trial reports each round's spend (``round_compute_*``) and its running totals (``compute_*``), which
it keeps in its checkpoint and carries on when it resumes.  The driver adds up every round it is told
of, rounds re-run after a restore from an older checkpoint included, into the durable record
(``spent``): those are what the MLflow child run shows as ``compute_*`` (one point per logged round, the
last the total), what the parent run carries for the whole sweep, and what ``zsexp status`` prints.  So
work lost to a kill counts as spent, not hidden.  A compute objective (``minimize``) is told the trial's
own total, the cost of the configuration as it ran.
"""

from __future__ import annotations

import time
from typing import Any

KEYS = ("compute_wall_s", "compute_cpu_s", "compute_gpu_s")
ROUND = "round_"                   # a round's spend: round_compute_wall_s, ...


class ComputeClock:
    """A trial's clock: ``tick()`` at each report gives that round's spend and the running totals."""

    def __init__(self, gpus: float, carried: dict[str, Any] | None = None, since: tuple[float, float] | None = None):
        """``since``: the (perf_counter, process_time) at which the trial started, so that loading its data
        and building its model count in its first round."""
        self.gpus = float(gpus or 0.0)
        carried = carried or {}
        self.total = {k: float(carried.get(k, 0.0) or 0.0) for k in KEYS}
        self._wall, self._cpu = since or (time.perf_counter(), time.process_time())

    def tick(self) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        spent = {"compute_wall_s": wall - self._wall, "compute_cpu_s": max(0.0, cpu - self._cpu)}
        spent["compute_gpu_s"] = spent["compute_wall_s"] * self.gpus
        self._wall, self._cpu = wall, cpu
        for k in KEYS:
            self.total[k] += spent[k]
        return {**{ROUND + k: v for k, v in spent.items()}, **self.total}


def round_spend(result: dict[str, Any]) -> dict[str, float] | None:
    """A reported round's spend (None for a result that carries none: a trial ended from its marker)."""
    out = {}
    for k in KEYS:
        v = result.get(ROUND + k)
        if not isinstance(v, (int, float)) or v != v or v < 0:
            return None
        out[k] = float(v)
    return out


def add(total: dict[str, float] | None, spend: dict[str, float]) -> dict[str, float]:
    total = dict(total or {})
    return {k: float(total.get(k, 0.0)) + spend[k] for k in KEYS}


def sweep_total(spent: dict[str, dict[str, float]]) -> dict[str, float]:
    """The sweep's totals: every trial's spend summed."""
    return {k: sum(float((s or {}).get(k, 0.0)) for s in spent.values()) for k in KEYS}


def describe(total: dict[str, float]) -> str:
    """``wall 1.2 h, CPU 2.3 h, GPU 0.5 GPU-h`` (seconds under an hour)."""
    def fmt(v: float, unit: str) -> str:
        return f"{v / 3600:.2f} {unit}h" if v >= 3600 else f"{v:.1f} {unit}s"

    text = f"wall {fmt(total.get('compute_wall_s', 0.0), '')}, CPU {fmt(total.get('compute_cpu_s', 0.0), '')}"
    if total.get("compute_gpu_s", 0.0) > 0:
        text += f", GPU {fmt(total['compute_gpu_s'], 'GPU-')}"
    return text
