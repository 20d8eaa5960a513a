"""The Tune trainable: the only code that reads Tune's config dict (STYLE.md habit 6).

One trial = one model trained round by round (E-M iterations for ZSCRGAN, step slices for
CM-GAN).  After every round it evaluates the validation classes and reports the metrics with a
checkpoint (``tune.report``); on (re)start it resumes from ``tune.get_checkpoint()``.  A loss
that turns NaN raises :class:`DivergenceError`, which fails the trial with that message.

Before training, a (re)started trial reads the driver's finish marker (``zsexp.search.callback``):
a trial that had already completed or been stopped before the driver died ends at once, without
training or reporting, and one that had failed fails again with its recorded error (unless the
sweep is resumed with ``--retry-errored``).  A diverged trial writes its own marker before it
raises, so Tune's retries (``--retries``, meant for lost workers) do not train it again.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from zsexp.config import flat_params
from zsexp.faults import maybe_kill_worker, note_round
from zsexp.search.compute import ComputeClock
from zsexp.search.space import metric_key, trial_overrides

CKPT_FILE = "model.pt"
UPDATES_KEY = "updates_done"     # cumulative optimiser updates of a trial (ASHA's axis with `unit: updates`)


def trial_config(meta: dict[str, Any], flat: dict[str, Any], variant: dict[str, Any] | None = None):
    """The full typed config of a trial (also used by the driver to log MLflow params); ``variant``: an
    ablation's overrides, applied last."""
    from zsexp.data import load_dataset

    data = load_dataset(meta["dataset"], seed=meta["data_seed"])
    return data, config_for(meta, data, flat, variant)


def config_for(meta: dict[str, Any], data: Any, flat: dict[str, Any], variant: dict[str, Any] | None = None):
    """:func:`trial_config` on data already loaded."""
    from zsexp.models import dataset_defaults, get_spec, make_config

    spec = get_spec(meta["model"])
    overrides = trial_overrides(spec.config_cls, dataset_defaults(meta["model"], data), meta["fixed"], flat)
    layers = [("search space", overrides)] + ([("ablation variant", variant)] if variant else [])
    return make_config(meta["model"], data, *layers)


def trial_params(meta: dict[str, Any], flat: dict[str, Any]) -> dict[str, str]:
    return flat_params(trial_config(meta, flat)[1])


def train_trial(config: dict[str, Any], meta: dict[str, Any]) -> None:
    import ray
    import torch
    from ray import tune

    from zsexp.models import build_model, get_spec, train_rounds
    from zsexp.models.common import DivergenceError, configure_cpu_math, load_checkpoint, resolve_device
    from zsexp.search.cluster import trial_threads
    from zsexp.search.record import read_marker, write_marker

    started = (time.perf_counter(), time.process_time())          # the trial's compute starts here
    trial_id = tune.get_context().get_trial_id()
    sweep_dir = meta.get("sweep_dir")
    if sweep_dir:
        marker = read_marker(sweep_dir, trial_id)
        if marker and marker["outcome"] in ("completed", "early-stopped"):
            _report_recorded(meta, marker)                 # finished before the driver died: nothing trained
            return
        if marker and marker["outcome"] == "failed" and not meta.get("retry_errored"):
            raise RuntimeError(f"trial {trial_id} already failed, not run again (`zsexp resume --retry-errored` "
                               f"would): {marker['error'][-500:]}")
    configure_cpu_math()
    trial_threads()                                # one intra-op thread per CPU the trial was granted
    data, cfg = trial_config(meta, config)
    spec = get_spec(meta["model"])
    device = resolve_device(meta.get("device", "auto"))
    torch.manual_seed(meta["seed"])
    model = build_model(meta["model"], cfg, data, device=device, seed=meta["seed"], fit_split=meta["fit_split"])
    done_rounds, updates_done, carried = 0, 0.0, None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_checkpoint(Path(d) / CKPT_FILE)
        model.load_state_dict(state["model"])
        done_rounds = int(state["round"])
        updates_done = float(state.get("updates", 0.0))
        carried = state.get("compute")                    # the trial's totals go on from its checkpoint
    clock = ComputeClock(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0), carried,
                         since=started)
    rounds = min(spec.rounds(model), meta["max_rounds"])
    try:
        for r, losses, train_s in train_rounds(model, done_rounds + 1, rounds,
                                               before=lambda r: maybe_kill_worker(sweep_dir, r)):
            updates_done = _report_round(model, spec, data, meta, r, rounds, losses, train_s, updates_done,
                                         trial_id, clock)
    except DivergenceError as exc:
        if sweep_dir:      # a retry would diverge again: fail it at once
            write_marker(sweep_dir, trial_id, "failed", str(exc), by="trial")
        raise


def _report_recorded(meta: dict[str, Any], marker: dict[str, Any]) -> None:
    """A trial that had finished before the driver died ends at once.  Tune's snapshot may predate its
    results, and Tune requires the objective in a trial's result, so the recorded best value is reported
    once; the driver and the searcher ignore it (the trial's outcome is already recorded), and a
    scheduler sees the value the trial reached."""
    from ray import tune

    from zsexp.models import get_spec

    best = marker.get("best") or {}
    key = meta.get("metric_key") or metric_key(get_spec(meta["model"]).objective)     # sweeps before the key
    tune.report({key: best.get("value", float("nan")), "round": best.get("round", 0), UPDATES_KEY: 0.0,
                 "model_done": True, "max_rounds": meta["max_rounds"]})


def _report_round(model: Any, spec: Any, data: Any, meta: dict[str, Any], r: int, rounds: int,
                  losses: dict[str, float], train_s: float, updates_done: float, trial_id: str,
                  clock: ComputeClock) -> float:
    """Evaluate the validation classes after round ``r`` and report the metrics with a checkpoint to Tune;
    returns the trial's cumulative optimiser updates (ASHA's axis with ``unit: updates``)."""
    import ray
    import torch
    from ray import tune

    from zsexp.models.common import save_checkpoint
    from zsexp.train import checkpoint_state

    note_round(trial_id, r)
    t1 = time.perf_counter()
    val = model.evaluate("val")
    metrics: dict[str, Any] = {metric_key(k): v for k, v in val.items()}
    metrics.update({metric_key(k): v for k, v in spec.validation_extras(model).items()})   # CM-GAN §4.4
    metrics.update({f"train_{k}": v for k, v in losses.items()})
    updates_done += losses.get("updates", 0.0)
    metrics[UPDATES_KEY] = updates_done
    metrics.update(round=r, max_rounds=rounds, model_done=bool(getattr(model, "done", False)),
                   cpu_threads=torch.get_num_threads(),
                   node_id=ray.get_runtime_context().get_node_id())     # which Ray node ran it
    t2 = time.perf_counter()
    metrics.update(clock.tick())                 # the round's spend and the trial's totals (zsexp.search.compute)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(checkpoint_state(model, data, meta["dataset"], meta["data_seed"],
                                         {"round": r, "updates": updates_done, "compute": dict(clock.total)}),
                        Path(tmp) / CKPT_FILE)
        # where a round's time goes (benchmarks/sweep_overhead.py --profile sums these)
        metrics.update(time_train_s=train_s, time_eval_s=t2 - t1, time_checkpoint_s=time.perf_counter() - t2)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
    return updates_done
