"""One fixed-budget fit and one evaluation, inside a Ray trial: what a selection run and an ablation run do.

Neither chooses a round: the model is trained for its budget and the last round is the model.  A
checkpoint after every round (``<stem>.ckpt.pt``) lets a killed job continue where it stopped; it is
removed once the run's result file is written, so a finished run is exactly one ``<stem>.json``
(and, for a test evaluation, its ``<stem>.model.pt``).

The job's folder may be an object-store URI (a sweep or ablation kept in ``s3://``): the trial, on
whatever machine it runs, then works in a scratch folder of its own and uploads the round checkpoint
after every round, and the result and model when it ends (:class:`RunFolder`); the driver pulls them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ray import tune

from zsexp.errors import ZsexpError


class RunFolder:
    """Where a run's files go: the job's folder itself, or (an ``s3://`` job folder) a scratch folder of
    this process whose files are fetched from and uploaded to the store."""

    def __init__(self, out: str | Path):
        from zsexp import objectstore

        self.remote = objectstore.parse(str(out), "job folder") if objectstore.is_uri(out) else None
        if self.remote is not None:
            import tempfile

            self.path = Path(tempfile.mkdtemp(prefix="zsexp-run-"))
        else:
            self.path = Path(out)

    def fetch(self, name: str) -> None:
        if self.remote is not None:
            from zsexp import objectstore

            data = objectstore.get(self.remote, name, limit=8 << 30)
            if data is not None:
                (self.path / name).write_bytes(data)

    def upload(self, name: str) -> None:
        if self.remote is not None:
            from zsexp import objectstore

            objectstore.put_file(self.remote, name, str(self.path / name))

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)
        if self.remote is not None:
            from zsexp import objectstore

            objectstore.delete(self.remote, name)

    def done(self) -> None:
        """The scratch folder of an object-store job goes once its files are uploaded."""
        if self.remote is not None:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)

    def shown(self, name: str) -> str:
        return f"{self.remote.uri}/{name}" if self.remote is not None else str(self.path / name)


def fit_and_evaluate(tmeta: dict[str, Any], flat: dict[str, Any], seed: int, fit: str, budget: int | None,
                     out: str | Path, stem: str, split: str, variant: dict[str, Any] | None = None) -> dict[str, Any]:
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
    folder = RunFolder(out)
    folder.fetch(f"{stem}.ckpt.pt")
    ckpt_path = folder.path / f"{stem}.ckpt.pt"
    done = 0
    if ckpt_path.is_file():                      # an interrupted job continues where it stopped
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        done = int(state["round"])
    rounds = min(spec.rounds(model), int(budget or tmeta["max_rounds"]))
    r = done
    for r, losses, _ in train_rounds(model, done + 1, rounds):
        save_checkpoint(checkpoint_state(model, data, tmeta["dataset"], tmeta["data_seed"], {"round": r}), ckpt_path)
        folder.upload(ckpt_path.name)
        tune.report({"round": r, **{f"train_{k}": v for k, v in losses.items()}})
    result: dict[str, Any] = {"seed": seed, "fit": fit, "rounds": r, "config": dict(vars(cfg))}
    if split == "val":
        res = {**model.evaluate("val"), **spec.validation_extras(model)}     # CM-GAN: L_sup as well (§4.4)
        result["metrics"] = {k: float(v) for k, v in res.items()}
    else:
        final = folder.path / f"{stem}.model.pt"
        save_checkpoint(checkpoint_state(model, data, tmeta["dataset"], tmeta["data_seed"], {"round": r}), final)
        folder.upload(final.name)
        res = spec.evaluate_units(model, data, split)
        result.update(metrics={k: float(v) for k, v in res.items() if isinstance(v, float)},
                      per={k: v for k, v in res.items() if not isinstance(v, float)},
                      model_path=folder.shown(final.name),
                      chance=model.chance(split))
    folder.done()
    return result


def write_result(out: str | Path, stem: str, result: dict[str, Any]) -> None:
    """The run's result file, written atomically (in an object store: one put); then its round checkpoint
    goes."""
    folder = RunFolder(out)
    if folder.remote is not None:
        from zsexp import objectstore

        objectstore.put(folder.remote, f"{stem}.json", json.dumps(result, default=str).encode())
    else:
        tmp = folder.path / f"{stem}.json.tmp"
        tmp.write_text(json.dumps(result, default=str))
        os.replace(tmp, folder.path / f"{stem}.json")
    folder.remove(f"{stem}.ckpt.pt")
    folder.done()


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
        name = f"{self.stem(trial.config['pair'])}.json"
        try:
            from zsexp import objectstore, workcopy

            loc = workcopy.remote(self.out)
            raw = objectstore.get(loc, name) if loc is not None else (self.out / name).read_bytes()
            what = self.outcome(json.loads(raw or b""))
        except (OSError, ValueError, KeyError, TypeError, ZsexpError):
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

    from zsexp import objectstore, workcopy
    from zsexp.errors import ZsexpError
    from zsexp.search.cluster import init_ray, trial_resources

    loc = workcopy.remote(out)
    if loc is not None:            # on an object store: the trials write there, wherever they run
        job = {**job, "dir": loc.uri}
    storage, fs = (loc.arrow_path(), objectstore.arrow_fs()) if loc is not None else (str(out), None)
    started = init_ray(address)
    try:
        res, concurrency = trial_resources(options)
        trainable = tune.with_resources(tune.with_parameters(trial_fn, job=job), res)
        tuner = tune.Tuner(trainable, param_space={"pair": tune.grid_search(missing)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
                           run_config=tune.RunConfig(name="ray", storage_path=storage, storage_filesystem=fs,
                                                     verbose=0,
                                                     callbacks=[callback],
                                                     failure_config=tune.FailureConfig(max_failures=1)))
        grid = tuner.fit()
        workcopy.refresh(out)       # on an object store: the runs' results and models
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
