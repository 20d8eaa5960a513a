"""Ray's OptunaSearch with one fix for resumed sweeps.

Optuna 5 samplers use ``constant_liar``: a trial left RUNNING counts as a pessimistic guess for as
long as it stays RUNNING.  After a driver crash, an Optuna trial whose Tune trial was never saved
in the experiment state would stay RUNNING forever and bias every later suggestion.  On restore,
RUNNING Optuna trials are marked FAIL; a Tune trial that Tune does resume and that later
completes is recorded again as a completed trial with the same parameters, so the sampler's
history stays whole and TPE continues from every earlier result.
"""

from __future__ import annotations

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

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
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
