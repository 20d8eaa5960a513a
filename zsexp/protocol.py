"""The final selection's protocol in words and constants, shared by the job, its report and the registry."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from zsexp import options as opt
from zsexp.errors import ZsexpError
from zsexp.options import option

PHASES = {"val": "train", "test": "trainval"}          # phase -> classes the model is fitted on
PLURAL = {"query": "queries", "image": "images"}
SEED_RULE = "the seed whose validation objective is nearest the winner's mean over seeds (ties: lower seed)"
PROTOCOL = ("Candidates are ranked and the winner chosen by their mean validation objective over seeds "
            "(models fitted on the train classes); test figures come from separate models fitted on train + val "
            "and are measured once, for this report, never to choose.")
MAX_K, MAX_SEEDS = 100, 100


@dataclass
class SelectOptions:
    """``zsexp select``: the sweep, how many of its configurations and seeds, where the winner goes."""

    sweep: str = option(dataclasses.MISSING, positional=True, help="the sweep whose configurations are selected")
    k: int = option(5, kind=int, low=0, high=1_000, help="configurations to take (default %(default)s)")
    seeds: int = option(5, kind=int, low=0, high=1_000, help="seeds per configuration (default %(default)s)")
    storage: str | None = opt.storage()
    address: str | None = opt.address()
    register_as: str | None = option(help="registered model name (default zsexp-MODEL-DATASET)")
    retrieval_k: int = option(50, kind=int, low=1, high=1_000_000,
                              help="default top-k the served model returns (default %(default)s)")
    trust_storage: bool = opt.trust_storage()
    objective: str | None = option(help="a multi-objective sweep: the quality objective that decides (one of "
                                        "its objectives, e.g. map@50); the candidates are its Pareto front")


def fmt_stats(s: dict[str, float]) -> str:
    """``mean ± sd [95% CI]`` of a summary over seeds."""
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]"


@dataclass
class Decision:
    """What the final selection decided on validation, and what it measured once on test for the report.

    ``summary``: one record per candidate (its validation values by seed, mean and spread; its test
    statistics; its per-class test values); ``order``: the winner first, then the others by mean
    validation objective; ``registered_run``: the result of the winner's typical seed (:data:`SEED_RULE`);
    ``test``: the paired test of winner against runner-up; ``baseline``: the task's baseline beside it."""

    objective: str                       # the sweep's validation objective: it decides
    mode: str
    test_objective: str                  # what the report shows on test
    test_mode: str
    summary: list[dict[str, Any]]
    order: list[dict[str, Any]]
    winner: int
    seed: int
    registered_run: dict[str, Any]
    test: dict[str, Any] | None
    val_runs: list[dict[str, Any]] = field(default_factory=list)
    test_runs: list[dict[str, Any]] = field(default_factory=list)
    baseline: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def margin(value: float | None, reference: float | None, mode: str) -> float | None:
    """How much better ``value`` is than ``reference`` (positive = better, for either direction)."""
    if value is None or reference is None:
        return None
    return float(value - reference) if mode == "max" else float(reference - value)


def deciding_space(space: Any, o: SelectOptions) -> Any:
    """``--objective`` against the sweep's objectives: required for a multi-objective sweep (a quality one),
    refused for another objective of a single-objective sweep."""
    from zsexp.search.compute import KEYS

    names = [m for m, _ in space.objectives or ((space.metric, space.mode),)]
    if o.objective is None:
        if space.multi:
            raise ZsexpError(f"sweep {o.sweep!r} has several objectives ({', '.join(names)}): name the one that "
                             f"decides with --objective (one of {[n for n in names if n not in KEYS]})")
        return space
    if o.objective not in names or o.objective in KEYS:
        raise ZsexpError(f"--objective {o.objective!r}: must be one of the sweep's quality objectives "
                         f"{[n for n in names if n not in KEYS]} (compute is what a candidate costs, not what it "
                         f"scores on validation)")
    return space
