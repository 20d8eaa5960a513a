"""One training run of one model: the loop behind ``zsexp train`` (and, round by round, a sweep trial).

A run trains ``rounds`` rounds, evaluates the validation classes after each, keeps the best
(by the model's validation objective) and the last checkpoint, then evaluates the unseen test
classes with the best-on-validation model -- test classes never choose anything.

With ``fit_split="trainval"`` the validation classes are training classes, so nothing can be
chosen on them: the run trains the full budget, ``best.pt`` is the last round (said in the log and
in ``metrics.json`` as ``"selected_by": "last round"``) and only the test classes are evaluated.
Fix the budget (``em_iterations`` / ``max_steps``) from a run on ``train`` or from a sweep.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zsexp.baselines import beside, safe_baseline
from zsexp.config import build_config, load_yaml, parse_set, to_dict
from zsexp.data import ZSLData, load_dataset
from zsexp.errors import ZsexpError
from zsexp.models import build_model, get_spec, make_config, require_discriminative_validation, train_rounds
from zsexp.models.common import (
    DivergenceError,
    configure_cpu_math,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    set_threads,
)


def resolve_config(family: str, data: ZSLData, config_file: str | None = None, sets: list[str] | None = None,
                   extra: dict | None = None) -> Any:
    overrides: list[tuple[str, Any]] = []
    if config_file:
        overrides.append((str(config_file), load_yaml(config_file) or {}))
    if extra:
        overrides.append(("overrides", extra))
    if sets:
        overrides.append(("--set", parse_set(sets)))
    return make_config(family, data, *overrides)


def is_better(new: float, old: float | None, mode: str) -> bool:
    if old is None or (isinstance(old, float) and math.isnan(old)):
        return True
    return new > old if mode == "max" else new < old


def checkpoint_state(model: Any, data: ZSLData, dataset_ref: str, data_seed: int, extra: dict | None = None) -> dict:
    return {"model": model.state_dict(),
            "dataset": {"ref": dataset_ref, "seed": data_seed, "fingerprint": data.fingerprint()},
            **(extra or {})}


def format_losses(losses: dict[str, float]) -> str:
    keep = {k: v for k, v in losses.items() if k.startswith("loss") or k in ("r", "kl", "val_measure")}
    return " ".join(f"{k}={v:.4g}" for k, v in keep.items())


def train_run(family: str, dataset: str, *, config_file: str | None = None, sets: list[str] | None = None,
              seed: int = 0, data_seed: int = 0, out_dir: str | Path = "runs/train", device: str = "auto",
              fit_split: str = "train", log: Callable[[str], None] = print, threads: int | None = None) -> dict:
    spec = get_spec(family)
    data = load_dataset(dataset, seed=data_seed)
    if fit_split == "train":
        require_discriminative_validation(data)
    cfg = resolve_config(family, data, config_file, sets)
    dev = resolve_device(device)
    n_threads = set_threads(threads)
    configure_cpu_math()
    torch.manual_seed(seed)
    model = build_model(family, cfg, data, device=dev, seed=seed, fit_split=fit_split)
    rounds = spec.rounds(model)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ZsexpError(f"output directory {out}: exists and is not a directory")
    from zsexp.paths import check_writable

    check_writable(out, "output directory")
    created = out.resolve()              # the topmost folder this run creates, removed if it diverges
    while not created.parent.exists():
        created = created.parent
    created = None if created.exists() else created
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train_rounds(family, spec, model, data, dataset, data_seed, seed, cfg, dev, n_threads, fit_split,
                             rounds, out, log)
    except DivergenceError as exc:
        if created is not None:           # a diverged run leaves no half-written output folder behind
            shutil.rmtree(created, ignore_errors=True)
        raise ZsexpError(f"[{family}] training diverged ({exc}); lower the learning rates or change the "
                         f"settings; nothing was kept") from None


def _train_rounds(family: str, spec: Any, model: Any, data: ZSLData, dataset: str, data_seed: int, seed: int,
                  cfg: Any, dev: torch.device, n_threads: int, fit_split: str, rounds: int, out: Path,
                  log: Callable[[str], None]) -> dict:
    objective = spec.objective
    select_on_val = fit_split == "train"
    log(f"[{family}] dataset {data.name} ({data.fingerprint()}), device {dev}, {n_threads} CPU threads, seed {seed}, "
        f"{rounds} rounds; "
        + (f"validation objective {objective} ({spec.mode})" if select_on_val else
           "fit on train + val: the validation classes are training classes, so no round is chosen on them; "
           "the last round is the model"))
    best, best_round, history = None, 0, []
    t0 = time.time()
    r = 0
    if rounds == 0:       # nothing to train (CM-GAN's CONSE-only ablation): the initial model is the model
        save_checkpoint(checkpoint_state(model, data, dataset, data_seed, {"round": 0}), out / "best.pt")
    for r, losses, _ in train_rounds(model, 1, rounds):
        row, val_txt, keep = {"round": r, **losses}, "", True       # trainval: every round is the latest model
        if select_on_val:
            val = model.evaluate("val")
            score = val[objective]
            row.update({f"val/{k}": v for k, v in val.items()})
            keep = is_better(score, best, spec.mode)
            if keep:
                best = score
        if keep:
            best_round = r
            save_checkpoint(checkpoint_state(model, data, dataset, data_seed, {"round": r}), out / "best.pt")
        if select_on_val:
            val_txt = f" | val {objective}={score:.2f} (best {best:.2f} @ {best_round})"
        history.append(row)
        log(f"[{family}] round {r:>3}/{rounds}  {format_losses(losses)}{val_txt} | {time.time() - t0:.1f}s")
    if getattr(model, "done", False):
        log(f"[{family}] training finished after round {r} (stopping rule)")
    save_checkpoint(checkpoint_state(model, data, dataset, data_seed, {"round": r}), out / "last.pt")
    best_model = build_model(family, cfg, data, device=dev, seed=seed, fit_split=fit_split)
    best_model.load_state_dict(load_checkpoint(out / "best.pt")["model"])
    result = {"model": family, "dataset": data.name, "dataset_ref": dataset, "fingerprint": data.fingerprint(),
              "seed": seed, "data_seed": data_seed, "device": str(dev), "fit_split": fit_split,
              "config": to_dict(cfg), "rounds": r, "best_round": best_round, "objective": objective,
              "selected_by": f"validation {objective}" if select_on_val else "last round",
              "val": best_model.evaluate("val") if select_on_val else None, "test": best_model.evaluate("test"),
              "checkpoint": str((out / "best.pt").resolve()), "history": history,
              "wall_time_s": round(time.time() - t0, 2)}
    reported = ("val", "test") if select_on_val else ("test",)
    result["chance"] = {s: best_model.chance(s) for s in reported}
    result["baseline"] = safe_baseline(family, data, fit_split, cfg, log)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    head = (f"best round {best_round}: val {objective}={result['val'][objective]:.2f}" if select_on_val
            else f"last round {best_round} (fit on train + val)")
    log(f"[{family}] {head}; test: " + ", ".join(f"{k}={v:.2f}" for k, v in result["test"].items()
                                                  if isinstance(v, float)))
    for split in reported:
        log(f"[{family}] {split} " + beside(objective, result[split][objective], result["baseline"],
                                             result["chance"][split], split))
    warn_degenerate(family, result["test"], log)
    log(f"[{family}] wrote {out / 'metrics.json'} and checkpoints {out / 'best.pt'}, {out / 'last.pt'}")
    return result


def warn_degenerate(family: str, metrics: dict, log: Callable[[str], None]) -> None:
    """All-zero embeddings make every cosine 0: such a query scores 0 whatever the gallery.  Say so."""
    q, i = metrics.get("degenerate_queries", 0), metrics.get("degenerate_images", 0)
    if q or i:
        log(f"[{family}] WARNING: {q} query and {i} image embeddings are all-zero (dead ReLU units): they tie "
            f"with every candidate and score 0; see `degenerate_queries` / `degenerate_images` in metrics.json")


def evaluate_checkpoint(path: str | Path, split: str = "test", dataset: str | None = None,
                        device: str = "auto") -> dict:
    state = load_checkpoint(path)
    mstate = state.get("model") if isinstance(state, dict) else None
    dref = state.get("dataset") if isinstance(state, dict) else None
    if not isinstance(mstate, dict) or not isinstance(dref, dict):
        raise ZsexpError(f"{path}: not a zsexp checkpoint (`model` and `dataset` must be mappings)")
    family = mstate.get("family")
    if not isinstance(family, str) or not isinstance(mstate.get("config"), dict):
        raise ZsexpError(f"{path}: not a zsexp checkpoint (no model family or config)")
    get_spec(family)
    if not isinstance(dref.get("ref"), str) or not isinstance(dref.get("fingerprint"), str) \
            or not isinstance(dref.get("seed", 0), int):
        raise ZsexpError(f"{path}: not a zsexp checkpoint (`dataset` needs ref, seed and fingerprint)")
    data = load_dataset(dataset or dref["ref"], seed=int(dref.get("seed", 0)))
    if data.fingerprint() != dref["fingerprint"]:
        raise ZsexpError(f"{path}: trained on dataset fingerprint {dref['fingerprint']} but {data.name} has "
                         f"{data.fingerprint()}; pass the original data with --dataset")
    spec = get_spec(family)
    cfg = build_config(spec.config_cls, (f"{path} config", mstate["config"]))
    fit_split = mstate.get("fit_split", "train")
    try:
        model = build_model(family, cfg, data, device=resolve_device(device), seed=int(mstate.get("seed", 0)),
                            fit_split=fit_split)
        model.load_state_dict(mstate)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ZsexpError(f"{path}: the checkpoint does not fit a {family} model on {data.name} "
                         f"({type(exc).__name__}: {first[:200]})") from None
    return {"model": family, "dataset": data.name, "split": split, "metrics": model.evaluate(split),
            "chance": model.chance(split), "baseline": safe_baseline(family, data, fit_split, cfg, print)}
