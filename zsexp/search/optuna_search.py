"""Ray's OptunaSearch, told each trial's best-round value, with a fix for resumed sweeps.

**One rule from sweep to registry.**  A trial reports its validation objective every round; Optuna
is told the trial's *best* round value when it completes (not the last round's), which is the
value the MLflow child run, the sweep summary and ``zsexp select`` rank by -- and the selection then
trains each candidate for exactly that many rounds.  The round values come from the study's own
record of intermediate values (``Trial.report``), so a resumed trial keeps its earlier rounds.

Optuna 5 samplers use ``constant_liar``: a trial left RUNNING counts as a pessimistic guess for as
long as it stays RUNNING.  After a driver crash, an Optuna trial whose Tune trial was never saved
in the experiment state would stay RUNNING forever and bias every later suggestion.  On restore,
RUNNING Optuna trials are marked FAIL; a Tune trial that Tune does resume and that later
completes is recorded again as a completed trial with the same parameters, so the sampler's
history stays whole and TPE continues from every earlier result.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._failed_on_restore: set[str] = set()
        for trial_id, ot_trial in list(self._ot_trials.items()):
            frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)   # noqa: SLF001
            if frozen.state == optuna.trial.TrialState.RUNNING:
                self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
                self._failed_on_restore.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # a finished Optuna trial takes no intermediate values; its final value is added on completion
        if trial_id not in getattr(self, "_failed_on_restore", set()):
            super().on_trial_result(trial_id, result)

    def _best_round_result(self, trial_id: str, result: dict | None) -> dict | None:
        """``result`` with the objective replaced by the best value over the trial's rounds."""
        ot_trial = self._ot_trials.get(trial_id)
        if not result or ot_trial is None or isinstance(self.metric, list):
            return result
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)   # noqa: SLF001
        values = [v for v in frozen.intermediate_values.values() if v is not None and math.isfinite(v)]
        last = result.get(self.metric)
        if isinstance(last, (int, float)) and math.isfinite(last):
            values.append(float(last))
        if not values:
            return result
        return {**result, self.metric: max(values) if self._mode == "max" else min(values)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        result = self._best_round_result(trial_id, result)
        if trial_id not in getattr(self, "_failed_on_restore", set()):
            return super().on_trial_complete(trial_id, result, error)
        self._failed_on_restore.discard(trial_id)
        value = (result or {}).get(self.metric)
        if value is None or error:
            self._completed_trials.add(trial_id)
            return None
        old = self._ot_trials[trial_id]
        params: dict[str, Any] = dict(old.params)
        dists = {k: v for k, v in old.distributions.items() if k in params}
        self._ot_study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(value)))
        self._completed_trials.add(trial_id)
        return None
