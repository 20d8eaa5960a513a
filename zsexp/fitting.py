"""One fixed-budget fit and one evaluation, inside a Ray trial: what a selection run and an ablation run do.

Neither chooses a round: the model is trained for its budget and the last round is the model.  A
checkpoint after every round (``<stem>.ckpt.pt``) lets a killed job continue where it stopped; it is
removed once the run's result file is written, so a finished run is exactly one ``<stem>.json``
(and, for a test evaluation, its ``<stem>.model.pt``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray import tune


def fit_and_evaluate(tmeta: dict[str, Any], flat: dict[str, Any], seed: int, fit: str, budget: int | None,
                     out: Path, stem: str, split: str, variant: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit ``tmeta``'s model with the searched values ``flat`` (and a ``variant``'s overrides on top) on
    the ``fit`` classes for at most ``budget`` rounds, reporting each round to Tune, then evaluate
    ``split``: ``val`` gives the metrics (and the model's own validation measure), ``test`` the metrics
    with each query's / image's values (``per``), chance on the same split, and the final model saved
    as ``<stem>.model.pt``.
    Returns the result record (the caller adds its own keys and writes it with :func:`write_result`)."""
    import torch
    from ray import tune

    from zsexp.models import build_model, get_spec, train_rounds
    from zsexp.models.common import configure_cpu_math, load_checkpoint, resolve_device, save_checkpoint
    from zsexp.search.trainable import trial_config
    from zsexp.train import checkpoint_state

    configure_cpu_math()
    tmeta = dict(tmeta, seed=seed, fit_split=fit)
    data, cfg = trial_config(tmeta, flat, variant)
    spec = get_spec(tmeta["model"])
    torch.manual_seed(seed)
    model = build_model(tmeta["model"], cfg, data, device=resolve_device(tmeta.get("device", "auto")), seed=seed,
                        fit_split=fit)
    ckpt_path = out / f"{stem}.ckpt.pt"
    done = 0
    if ckpt_path.is_file():                      # an interrupted job continues where it stopped
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        done = int(state["round"])
    rounds = min(spec.rounds(model), int(budget or tmeta["max_rounds"]))
    r = done
    for r, losses, _ in train_rounds(model, done + 1, rounds):
        save_checkpoint(checkpoint_state(model, data, tmeta["dataset"], tmeta["data_seed"], {"round": r}), ckpt_path)
        tune.report({"round": r, **{f"train_{k}": v for k, v in losses.items()}})
    result: dict[str, Any] = {"seed": seed, "fit": fit, "rounds": r, "config": dict(vars(cfg))}
    if split == "val":
        res = {**model.evaluate("val"), **spec.validation_extras(model)}     # CM-GAN: L_sup as well (§4.4)
        result["metrics"] = {k: float(v) for k, v in res.items()}
    else:
        final = out / f"{stem}.model.pt"
        save_checkpoint(checkpoint_state(model, data, tmeta["dataset"], tmeta["data_seed"], {"round": r}), final)
        res = spec.evaluate_units(model, data, split)
        result.update(metrics={k: float(v) for k, v in res.items() if isinstance(v, float)},
                      per={k: v for k, v in res.items() if not isinstance(v, float)}, model_path=str(final),
                      chance=model.chance(split))
    return result


def write_result(out: Path, stem: str, result: dict[str, Any]) -> None:
    """The run's result file, written atomically; then its round checkpoint goes."""
    tmp = out / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, out / f"{stem}.json")
    (out / f"{stem}.ckpt.pt").unlink(missing_ok=True)


class GridProgress(tune.Callback):
    """One line per finished run of a grid (what it is, and its value read from its result file) instead
    of Tune's tables.  A job says what a run is (:meth:`describe`), where its result file is
    (:meth:`stem`) and what of the result to show (:meth:`outcome`)."""

    def __init__(self, tag: str, n: int, out: Path, objective: str):
        self.tag, self.n, self.done, self.out, self.objective = tag, n, 0, out, objective

    def describe(self, index: int) -> str:
        raise NotImplementedError

    def stem(self, index: int) -> str:
        raise NotImplementedError

    def outcome(self, result: dict[str, Any]) -> str:
        raise NotImplementedError

    def _line(self, trial, what: str) -> None:
        self.done += 1
        print(f"[{self.tag}] {self.done}/{self.n} {self.describe(trial.config['pair'])}{what}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        try:
            what = self.outcome(json.loads((self.out / f"{self.stem(trial.config['pair'])}.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            what = "done"
        self._line(trial, what)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAILED")


def run_grid(trial_fn: Any, job: dict[str, Any], missing: list[int], options: dict[str, Any], out: Path,
             callback: Any, address: str | None, again: str) -> None:
    """Run ``trial_fn`` once per index in ``missing`` (Tune's grid search over run indices) with the
    per-trial resources of ``options`` (a sweep's ``gpus``, ``gpus_per_trial``, ``cpus_per_trial``,
    ``max_concurrent``) on the local Ray or the cluster at ``address``.  Failed runs: every error in
    ``out/errors.log`` and one ZsexpError that says how to go on (``again``: "run `COMMAND` again")."""
    import ray
    from ray import tune

    from zsexp.errors import ZsexpError
    from zsexp.search.cluster import init_ray, trial_resources

    started = init_ray(address)
    try:
        res, concurrency = trial_resources(options)
        trainable = tune.with_resources(tune.with_parameters(trial_fn, job=job), res)
        tuner = tune.Tuner(trainable, param_space={"pair": tune.grid_search(missing)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
                           run_config=tune.RunConfig(name="ray", storage_path=str(out), verbose=0,
                                                     callbacks=[callback],
                                                     failure_config=tune.FailureConfig(max_failures=1)))
        grid = tuner.fit()
        errors = [r.error for r in grid if r.error]
        if errors:
            log = out / "errors.log"
            log.write_text("\n\n".join(str(e) for e in errors))
            last = next((ln for ln in reversed(str(errors[0]).strip().splitlines()) if ln.strip()), "")
            raise ZsexpError(f"{len(errors)} run(s) failed ({last.strip()[:300]}); every error is in {log}; fix the "
                             f"cause and {again} (finished runs are kept)")
    finally:
        if started:
            ray.shutdown()
