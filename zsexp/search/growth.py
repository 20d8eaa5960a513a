"""What lets a sweep grow after Tune thought it done: a search generator whose target is the sweep's
current trial count, and ASHA rungs that outlive the driver.

**More trials** (``zsexp resume NAME --trials N``).  Ray Tune keeps the number of trials to create in
its search generator's snapshot (``search_gen_state-*.json``: ``total_samples``) and restores it as
it was; ``Tuner.restore`` takes no new ``num_samples`` (ray-project/ray#18847).  A sweep is therefore
built with :class:`GrowableSearchGenerator` around ``ConcurrencyLimiter(ResumableOptunaSearch)`` --
the same wrappers ``tune.run`` would add itself -- whose restored target is the larger of the
snapshot's and the sweep's (``zsexp_sweep.json`` ``trials``, given to the searcher through
``optuna_search.set_target`` before Tune restores it).  The Optuna study, its journal and the sampler
are the same objects as before: the new trials are sampled with every earlier trial in view.

**ASHA's rungs.**  Tune does not keep its scheduler's state in the snapshot: a restored ASHA has
empty rungs, so after a resume (and above all after growing a finished sweep) the new trials would
be compared only with each other, and none would be stopped early until enough of them had passed
each rung.  :class:`DurableASHA` appends every value it records in a rung to ``zsexp_rungs.jsonl`` in
the sweep directory (JSON lines, never unpickled) and reloads them when Tune starts it again, so the
earlier trials keep their places in the rungs.  A rung value recorded by a trial that a kill then cost
its Tune record is kept: it is a real measurement of that configuration at that rung.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.search_generator import SearchGenerator

from zsexp.compat import ray_tune

RUNGS_FILE = "zsexp_rungs.jsonl"
_TRIAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# the sweep directory each driver-side scheduler appends to, set by the driver before Tune starts it: the
# scheduler restored from ``tuner.pkl`` may come from a sweep directory that has moved since
_RUNG_DIRS: dict[str, str] = {}


def set_sweep_dir(sweep: str, sweep_dir: str | Path) -> None:
    from zsexp.search.record import set_current_dir

    _RUNG_DIRS[sweep] = str(sweep_dir)
    set_current_dir(sweep, sweep_dir)


def base_searcher(search_alg):
    s = search_alg
    while hasattr(s, "searcher"):
        s = s.searcher
    return s


class GrowableSearchGenerator(SearchGenerator):
    """Tune's search generator with a target that the sweep may have raised since its snapshot."""

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        target = getattr(base_searcher(self), "total_trials", None)   # restored just before (restore_from_dir)
        if target and target > ray_tune.search_target(self):
            ray_tune.raise_search_target(self, target)


class DurableASHA(ASHAScheduler):
    """Ray's ASHA whose rung records survive the driver (see the module's docstring)."""

    def __init__(self, *args, sweep: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._sweep = sweep

    def _file(self) -> Path | None:
        d = _RUNG_DIRS.get(self._sweep)
        return Path(d) / RUNGS_FILE if d else None

    def set_search_properties(self, metric, mode, **spec) -> bool:
        ok = super().set_search_properties(metric, mode, **spec)
        self._reload()
        return ok

    def _reload(self) -> None:
        """Put every recorded rung value back (a line cut by a kill, or not of this scheduler, is skipped)."""
        path = self._file()
        if path is None or not path.is_file() or path.is_symlink():
            return
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    e = json.loads(line)
                    b, milestone, tid, value = e["bracket"], e["milestone"], e["trial"], float(e["value"])
                except (ValueError, KeyError, TypeError):
                    continue
                brackets = ray_tune.asha_brackets(self)
                if (not isinstance(b, int) or not 0 <= b < len(brackets) or not isinstance(tid, str)
                        or not _TRIAL_ID.match(tid) or not math.isfinite(value)):
                    continue
                for m, recorded in ray_tune.bracket_rungs(brackets[b]):
                    if m == milestone:
                        recorded.setdefault(tid, value)

    def _recorded(self, trial_id: str) -> tuple[int, set]:
        bracket = ray_tune.asha_trial_brackets(self).get(trial_id)
        if bracket is None:
            return -1, set()
        return (ray_tune.asha_brackets(self).index(bracket),
                {m for m, rec in ray_tune.bracket_rungs(bracket) if trial_id in rec})

    def _append_new(self, trial_id: str, before: tuple[int, set]) -> None:
        b, seen = before
        path = self._file()
        if b < 0 or path is None:
            return
        lines = [json.dumps({"trial": trial_id, "bracket": b, "milestone": m, "value": rec[trial_id]})
                 for m, rec in ray_tune.bracket_rungs(ray_tune.asha_brackets(self)[b])
                 if trial_id in rec and m not in seen]
        if lines:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a+b") as f:
                cut = f.seek(0, os.SEEK_END) > 0 and os.pread(fd, 1, f.tell() - 1) != b"\n"
                # a line cut by a kill is closed first, so that it spoils no later record
                f.write((("\n" if cut else "") + "".join(line + "\n" for line in lines)).encode())
            from zsexp import workcopy

            workcopy.written(path)          # on an object store: uploaded before the decision is acted on

    def on_trial_result(self, tune_controller, trial, result):
        before = self._recorded(trial.trial_id)
        action = super().on_trial_result(tune_controller, trial, result)
        self._append_new(trial.trial_id, before)
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        before = self._recorded(trial.trial_id)
        info = ray_tune.asha_trial_brackets(self)
        bracket = info.get(trial.trial_id)
        super().on_trial_complete(tune_controller, trial, result)
        if bracket is not None and trial.trial_id not in info:
            info[trial.trial_id] = bracket          # for _append_new only
            try:
                self._append_new(trial.trial_id, before)
            finally:
                del info[trial.trial_id]
