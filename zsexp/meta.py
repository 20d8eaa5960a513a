"""A sweep's metadata (``zsexp_sweep.json``) as a typed record with one JSON round trip.

Everything ``resume``, ``status``, ``select`` and the UI links need to find a sweep's Tune run, its
Optuna study and its MLflow runs again.  Files written by older zsexp versions load: keys added
since have defaults, and keys this version does not know are ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from zsexp.errors import ZsexpError

# required keys and their JSON types; the others have defaults
_REQUIRED = {"name": str, "model": str, "dataset": str, "dataset_name": str, "trials": int, "space": dict,
             "space_source": str, "tracking_uri": str, "experiment": str, "experiment_id": str,
             "parent_run_id": str, "options": dict, "trial_meta": dict, "status": str}


@dataclass
class SweepMeta:
    name: str
    dir: str                     # where the sweep was found; never read back from the file
    model: str
    dataset: str                 # the dataset reference the user gave (name or path)
    dataset_name: str
    trials: int
    space: dict[str, Any]        # the resolved search space (with --set and --sampler applied)
    space_source: str
    tracking_uri: str            # without credentials
    experiment: str
    options: dict[str, Any]      # gpus, gpus_per_trial, cpus_per_trial, max_concurrent
    trial_meta: dict[str, Any]   # what every trial receives (model, dataset, seeds, fixed keys, budget)
    fingerprint: str = ""
    scheduler: str = "asha"
    seed: int = 0
    experiment_id: str = ""
    parent_run_id: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    retries: int = 2
    max_failed_trials: int | None = None
    keep_checkpoints: int | None = None
    reference: dict[str, Any] | None = None      # the task's baseline and chance on the validation classes
    progress_every_s: float = 5.0
    created: str = ""
    status: str = "created"      # created | running | finished | stopped | interrupted | failed
    growable: bool = False       # built so that `resume --trials N` can raise `trials` (zsexp.search.growth)
    grown: list[dict[str, Any]] = field(default_factory=list)   # every `resume --trials`: from, to, when
    warm_start: dict[str, Any] | None = None     # the earlier sweep this one started from, trials taken/skipped
    resources: dict[str, float] | None = field(default=None, repr=False)   # this run's, never stored

    @classmethod
    def from_json(cls, data: Any, where: str, sweep_dir: str) -> SweepMeta:
        """The record of a ``zsexp_sweep.json`` found at ``sweep_dir``; a damaged one is one clear error."""
        if not isinstance(data, dict):
            raise ZsexpError(f"{where}: unreadable sweep metadata (a JSON object is expected)")
        for key, typ in _REQUIRED.items():
            if not isinstance(data.get(key), typ) or isinstance(data.get(key), bool):
                raise ZsexpError(f"{where}: key `{key}` is missing or not a {typ.__name__}; the file is damaged")
        known = {f.name for f in dataclasses.fields(cls)} - {"dir", "resources"}
        meta = cls(dir=str(sweep_dir), **{k: v for k, v in data.items() if k in known})
        from zsexp.workcopy import describe

        # the trials' view of the sweep: its folder, or its object-store URI (they may run on other machines)
        meta.trial_meta = {**meta.trial_meta, "sweep_dir": describe(sweep_dir)}
        return meta

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("resources")
        return out


@dataclass
class TrialRecord:
    """One trial of a sweep as ``status`` and ``select`` see it: Tune's state, the driver's durable record
    (best-round validation value, its round, the outcome), and the trial's searched configuration."""

    trial_id: str
    status: str                  # Tune's: PENDING | RUNNING | TERMINATED | ERROR ...
    rounds: int                  # rounds reported
    best: float | None = None    # best-round validation objective (what Optuna was told)
    best_round: int | None = None
    outcome: str | None = None   # completed | early-stopped | failed (None while it runs)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
