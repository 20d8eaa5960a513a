"""``zsexp select SWEEP``: the final-selection job, and ``zsexp promote``: the registry alias move.

1. Rank the sweep's configurations by its objective on the validation classes; failed trials and
   trials without the metric are left out, identical configurations count once (best value),
   ties keep the earlier trial.  Take the top k.
2. Train each configuration with ``--seeds`` seeds at the **full** budget (every E-M iteration /
   alternating step the config asks for, not the sweep's capped rounds) on **train + val**
   classes, in parallel on the sweep's Ray cluster with the sweep's per-trial resources.  The
   final model of each run is evaluated once on the **unseen test classes**, with per-query
   (ZSCRGAN: per test class) or per-image (CM-GAN) values.
3. Summarise per configuration: mean, standard deviation and a 95% t-interval over seeds; the
   winner has the best mean test objective; a paired Wilcoxon signed-rank test compares winner
   and runner-up on per-class values averaged over seeds (p < 0.05 called significant).
4. Write a Markdown report with PNG plots (candidate distributions, the sweep's optimisation
   history, Optuna parameter importances) and log everything to MLflow: one selection run with a
   nested run per configuration x seed.
5. Log the winner (its best seed) as an MLflow pyfunc retrieval model, register it, tag the
   version with its test metrics and sweep, and give it the alias ``candidate``.

Resumable: each configuration x seed writes its result file when it finishes and a checkpoint
after every round; running the job again skips finished pairs and continues unfinished ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zsexp.errors import ZsexpError
from zsexp.models import get_spec
from zsexp.search.space import SearchSpace, parse_space
from zsexp.search.sweep import _init_ray, _resources, read_meta, sweep_trials

PER_QUERY_KEY = {"precision@50": "precision", "map@50": "ap", "top1": "top1"}


@dataclass
class SelectOptions:
    sweep: str
    k: int = 5
    seeds: int = 5
    storage: str | None = None
    address: str | None = None
    register_as: str | None = None
    retrieval_k: int = 50


# --------------------------------------------------------------------------- ranking
def rank_configs(trials: list[dict[str, Any]], space: SearchSpace) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for order, t in enumerate(sorted(trials, key=lambda t: t["trial_id"])):
        val = t["best"]
        if t["status"] == "ERROR" or t["outcome"] == "failed" or val is None or not math.isfinite(val):
            continue
        params = {k: t["config"][k] for k in sorted(space.params) if k in t["config"]}
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in seen or _better(val, seen[key]["value"], space.mode):
            seen[key] = {"trial_id": t["trial_id"], "value": float(val), "params": params, "order": order}
    sign = -1.0 if space.mode == "max" else 1.0
    return sorted(seen.values(), key=lambda c: (sign * c["value"], c["order"]))


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


# --------------------------------------------------------------------------- one configuration x seed
def selection_trial(config: dict[str, Any], job: dict[str, Any]) -> None:
    """Train one (configuration, seed) at the full budget on train + val; evaluate the test classes."""
    import torch
    from ray import tune

    from zsexp.models import build_model
    from zsexp.models.common import configure_cpu_math, load_checkpoint, resolve_device, save_checkpoint
    from zsexp.search.trainable import trial_config
    from zsexp.train import checkpoint_state

    pair = job["pairs"][config["pair"]]
    ci, seed = pair
    out = Path(job["dir"])
    stem = f"c{ci}-s{seed}"
    meta = dict(job["trial_meta"], seed=seed, fit_split="trainval")
    configure_cpu_math()
    data, cfg = trial_config(meta, job["candidates"][ci]["params"])
    torch.manual_seed(seed)
    model = build_model(meta["model"], cfg, data, device=resolve_device(meta.get("device", "auto")), seed=seed,
                        fit_split="trainval")
    ckpt_path = out / f"{stem}.ckpt.pt"
    done = 0
    if ckpt_path.is_file():                      # an interrupted job continues where it stopped
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["model"])
        done = int(state["round"])
    rounds = get_spec(meta["model"]).rounds(model)
    for r in range(done + 1, rounds + 1):
        losses = model.train_round()
        save_checkpoint(checkpoint_state(model, data, meta["dataset"], meta["data_seed"], {"round": r}), ckpt_path)
        tune.report({"round": r, **{f"train_{k}": v for k, v in losses.items()}})
        if getattr(model, "done", False):
            break
    final = out / f"{stem}.model.pt"
    save_checkpoint(checkpoint_state(model, data, meta["dataset"], meta["data_seed"], {"round": rounds}), final)
    if meta["model"] == "zscrgan":
        res = model.evaluate("test", per_query=True)
    else:
        res = model.evaluate("test", per_image=True)
        res["image_labels"] = data.labels[data.images("test")].tolist()
    result = {"candidate": ci, "seed": seed, "config": {k: v for k, v in vars(cfg).items()},
              "metrics": {k: v for k, v in res.items() if isinstance(v, float)},
              "per": {k: v for k, v in res.items() if not isinstance(v, float)}, "model_path": str(final)}
    tmp = out / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, out / f"{stem}.json")
    ckpt_path.unlink(missing_ok=True)
    tune.report({"round": rounds, "finished": True})


# --------------------------------------------------------------------------- statistics
def per_class_values(model: str, objective: str, result: dict[str, Any]) -> dict[int, float]:
    """Per test class value of the objective for one run (the unit of the paired test)."""
    per = result["per"]
    if model == "zscrgan":
        vals = per["per_query"][PER_QUERY_KEY[objective]]
        return dict(zip(per["query_classes"], vals, strict=True))
    setting, metric = objective.split("/")
    ranks = np.asarray(per[f"{setting}/ranks"], dtype=float)
    labels = np.asarray(per["image_labels"])
    n_cands = result["n_candidates"][setting]
    out = {}
    for c in np.unique(labels):
        r = ranks[labels == c]
        out[int(c)] = float(100.0 * r.mean() / n_cands) if metric == "mfr" else float(
            100.0 * (r <= int(metric.split("@")[1])).mean())
    return out


def summarise(values: list[float]) -> dict[str, float]:
    from scipy import stats

    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    half = float(stats.t.ppf(0.975, arr.size - 1) * sd / math.sqrt(arr.size)) if arr.size > 1 else float("nan")
    return {"mean": mean, "std": sd, "ci95_low": mean - half, "ci95_high": mean + half, "n": int(arr.size)}


def paired_test(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    from scipy import stats

    keys = sorted(set(a) & set(b))
    x = np.array([a[k] for k in keys])
    y = np.array([b[k] for k in keys])
    if len(keys) < 2 or np.allclose(x, y):
        return {"test": "wilcoxon", "n": len(keys), "p_value": 1.0, "significant": False,
                "note": "identical per-class values" if len(keys) >= 2 else "too few classes"}
    res = stats.wilcoxon(x, y)
    return {"test": "wilcoxon", "n": len(keys), "statistic": float(res.statistic), "p_value": float(res.pvalue),
            "significant": bool(res.pvalue < 0.05)}


# --------------------------------------------------------------------------- the job
def run_selection(o: SelectOptions) -> dict[str, Any]:
    import ray
    from ray import tune

    if o.k < 1 or o.seeds < 1:
        raise ZsexpError(f"--k and --seeds must be >= 1, got k={o.k}, seeds={o.seeds}")
    meta = read_meta(o.sweep, o.storage)
    space = parse_space(meta["space"], meta["space_source"], meta["model"])
    trials = sweep_trials(meta, space)          # one pass over Tune's experiment state
    ranked = rank_configs(trials, space)
    if not ranked:
        raise ZsexpError(f"sweep {o.sweep!r} has no completed trial with val {space.metric}; nothing to select")
    cands = ranked[: o.k]
    sel_dir = Path(meta["dir"]) / f"selection-k{o.k}-s{o.seeds}"
    sel_dir.mkdir(parents=True, exist_ok=True)
    cand_file = sel_dir / "candidates.json"
    if cand_file.is_file():
        cands = json.loads(cand_file.read_text())          # a re-run keeps the first run's candidates
    else:
        cand_file.write_text(json.dumps(cands, indent=2, default=str))
    pairs = [(ci, s) for ci in range(len(cands)) for s in range(o.seeds)]
    missing = [i for i, (ci, s) in enumerate(pairs) if not (sel_dir / f"c{ci}-s{s}.json").is_file()]
    print(f"[select {o.sweep}] top {len(cands)} configurations x {o.seeds} seeds on train+val; "
          f"{len(pairs) - len(missing)} of {len(pairs)} runs already finished")
    if missing:
        started = _init_ray(o.address)
        try:
            res, concurrency = _resources(meta["options"])
            job = {"dir": str(sel_dir), "pairs": pairs, "candidates": cands, "trial_meta": meta["trial_meta"]}
            trainable = tune.with_resources(tune.with_parameters(selection_trial, job=job), res)
            tuner = tune.Tuner(trainable, param_space={"pair": tune.grid_search(missing)},
                               tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
                               run_config=tune.RunConfig(name="ray", storage_path=str(sel_dir), verbose=1,
                                                         failure_config=tune.FailureConfig(max_failures=1)))
            grid = tuner.fit()
            errors = [r.error for r in grid if r.error]
            if errors:
                raise ZsexpError(f"{len(errors)} selection run(s) failed; first error: {str(errors[0])[:500]}; "
                                 f"fix the cause and run `zsexp select {o.sweep}` again (finished runs are kept)")
        finally:
            if started:
                ray.shutdown()
    results = [json.loads((sel_dir / f"c{ci}-s{s}.json").read_text()) for ci, s in pairs]
    return finish_selection(o, meta, space, cands, results, sel_dir, trials)


def finish_selection(o: SelectOptions, meta: dict[str, Any], space: SearchSpace, cands: list[dict[str, Any]],
                     results: list[dict[str, Any]], sel_dir: Path, trials: list[dict[str, Any]]) -> dict[str, Any]:
    from zsexp.data import load_dataset

    data = load_dataset(meta["dataset"], seed=meta["trial_meta"]["data_seed"])
    n_unseen = len(data.test_classes)
    n_all = n_unseen + len(data.classes("trainval"))
    for r in results:
        r["n_candidates"] = {"zsl": n_unseen, "gzsl": n_all}
    metric_names = sorted(results[0]["metrics"])
    objective = space.metric
    if objective not in metric_names:
        # e.g. CM-GAN's `val_lsup` (L_sup on held-out seen images) has no test-class counterpart:
        # the test ranking then uses the model's default objective
        objective = get_spec(meta["model"]).objective
    summary = []
    for ci, cand in enumerate(cands):
        runs = [r for r in results if r["candidate"] == ci]
        stats_ = {m: summarise([r["metrics"][m] for r in runs]) for m in metric_names}
        per_class = {}
        for r in runs:
            for c, v in per_class_values(meta["model"], objective, r).items():
                per_class.setdefault(c, []).append(v)
        summary.append({"candidate": ci, "trial_id": cand["trial_id"], "val_objective": cand["value"],
                        "params": cand["params"], "stats": stats_,
                        "per_class": {c: float(np.mean(v)) for c, v in per_class.items()}})
    mode = space.mode if objective == space.metric else get_spec(meta["model"]).mode
    sign = 1.0 if mode == "max" else -1.0
    order = sorted(summary, key=lambda s: -sign * s["stats"][objective]["mean"])
    winner = order[0]
    test = paired_test(winner["per_class"], order[1]["per_class"]) if len(order) > 1 else None
    win_runs = [r for r in results if r["candidate"] == winner["candidate"]]
    best_seed_run = sorted(win_runs, key=lambda r: -sign * r["metrics"][objective])[0]
    report = write_report(meta, space, summary, order, test, sel_dir, best_seed_run, objective, trials)
    out = {"sweep": meta["name"], "objective": objective, "mode": mode, "summary": summary,
           "winner": winner["candidate"], "winner_seed": best_seed_run["seed"], "test": test,
           "report": str(report), "dir": str(sel_dir)}
    out.update(log_selection(o, meta, summary, results, test, sel_dir, best_seed_run, data, objective, mode))
    (sel_dir / "selection.json").write_text(json.dumps(out, indent=2, default=str))
    print_selection(out, order, space)
    return out


def _fmt_stats(s: dict[str, float]) -> str:
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]"


def write_report(meta, space, summary, order, test, sel_dir: Path, best_seed_run, objective: str,
                 trials: list[dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. candidates' test objective over seeds
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, s in enumerate(summary):
        vals = [v for v in _seed_values(sel_dir, s["candidate"], objective)]
        ax.scatter([i] * len(vals), vals, alpha=0.7)
        ax.errorbar(i, s["stats"][objective]["mean"], yerr=s["stats"][objective]["std"], fmt="_", color="k",
                    capsize=6)
    ax.set_xticks(range(len(summary)), [f"c{s['candidate']}\n{s['trial_id']}" for s in summary])
    ax.set_ylabel(f"test {objective}")
    ax.set_title("Unseen test classes: dots = seeds, bar = mean ± sd", fontsize=10)
    fig.tight_layout()
    fig.savefig(sel_dir / "candidates.png", dpi=110)
    plt.close(fig)
    # 2. the sweep's optimisation history and 3. parameter importances (Optuna's own tools)
    study = _sweep_study(trials, space)
    hist_ok = imp_ok = False
    if len(study.trials) >= 1:
        vals = [t.value for t in study.trials]
        best = np.maximum.accumulate(vals) if space.mode == "max" else np.minimum.accumulate(vals)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(range(1, len(vals) + 1), vals, "o", label="trial (best round)")
        ax.plot(range(1, len(vals) + 1), best, "-", label="best so far")
        ax.set_xlabel("trial (in order)")
        ax.set_ylabel(f"val {space.metric}")
        ax.legend()
        ax.set_title("Sweep optimisation history (validation classes)")
        fig.tight_layout()
        fig.savefig(sel_dir / "history.png", dpi=110)
        plt.close(fig)
        hist_ok = True
    importances = {}
    if len(study.trials) >= 3:
        import optuna

        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            importances = {}
        if importances:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            names = list(importances)[::-1]
            ax.barh(names, [importances[n] for n in names])
            ax.set_xlabel("importance (Optuna fANOVA)")
            ax.set_title("Hyper-parameter importance for the validation objective")
            fig.tight_layout()
            fig.savefig(sel_dir / "importance.png", dpi=110)
            plt.close(fig)
            imp_ok = True
    w = order[0]
    lines = [f"# Final selection: sweep `{meta['name']}`", "",
             f"{meta['model']} on {meta['dataset_name']} (fingerprint {meta['fingerprint']}). Top {len(summary)} "
             f"configurations by validation {space.metric} ({space.mode}), each trained with "
             f"{summary[0]['stats'][objective]['n']} seeds on train + val classes at the full budget and "
             f"evaluated on the unseen test classes.", "",
             "| candidate | sweep trial | val " + space.metric + " | test " + objective + " (mean ± sd [95% CI]) |",
             "|---|---|---|---|"]
    for s in order:
        lines.append(f"| c{s['candidate']} | {s['trial_id']} | {s['val_objective']:.2f} | "
                     f"{_fmt_stats(s['stats'][objective])} |")
    lines += ["", f"## Winner: c{w['candidate']} (sweep trial {w['trial_id']})", ""]
    if test:
        ru = order[1]
        diff = w["stats"][objective]["mean"] - ru["stats"][objective]["mean"]
        verdict = ("significant" if test["significant"] else "**not significant**")
        lines.append(f"Ahead of the runner-up c{ru['candidate']} by {diff:+.2f} points of test {objective}. "
                     f"Paired Wilcoxon signed-rank test over {test['n']} test classes (per-class values averaged "
                     f"over seeds): p = {test['p_value']:.4f}, {verdict} at 0.05.")
    lines += ["", "All test metrics of the winner:", "", "| metric | mean ± sd [95% CI] |", "|---|---|"]
    for m, st in w["stats"].items():
        lines.append(f"| {m} | {_fmt_stats(st)} |")
    lines += ["", "Winner configuration (searched keys):", "", "| key | value |", "|---|---|"]
    for k, v in w["params"].items():
        lines.append(f"| {k} | {v} |")
    lines += ["", f"Registered model: the seed {best_seed_run['seed']} run of the winner.", "",
              "![candidates](candidates.png)"]
    if hist_ok:
        lines.append("![history](history.png)")
    if imp_ok:
        lines.append("![importance](importance.png)")
    else:
        lines.append("(Parameter importances need at least 3 completed sweep trials with varied values.)")
    report = sel_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _seed_values(sel_dir: Path, ci: int, metric: str) -> list[float]:
    return [json.loads(p.read_text())["metrics"][metric] for p in sorted(sel_dir.glob(f"c{ci}-s*.json"))]


def _sweep_study(trials: list[dict[str, Any]], space: SearchSpace):
    """The sweep's trials as an Optuna study (for history and importances), in trial order."""
    import optuna

    dists = space.distributions()
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for t in sorted(trials, key=lambda t: t["trial_id"]):
        val = t["best"]
        if val is None or not math.isfinite(val):
            continue
        params = {k: t["config"][k] for k in dists if k in t["config"]}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  value=float(val)))
    return study


# --------------------------------------------------------------------------- MLflow
def log_selection(o, meta, summary, results, test, sel_dir: Path, best_seed_run, data,
                  objective: str, mode: str) -> dict[str, Any]:
    import mlflow
    from mlflow.entities import Metric, Param

    from zsexp.serving import log_retrieval_model
    from zsexp.tracking import TAG_KIND, TAG_SWEEP, client, safe_name

    c = client(meta["tracking_uri"])
    exp_id = meta["experiment_id"]
    sel_name = f"{meta['name']}-selection-k{o.k}-s{o.seeds}"
    found = c.search_runs([exp_id], filter_string=f"tags.`zsexp.selection` = '{sel_name}' and "
                                                  f"tags.`{TAG_KIND}` = 'selection'", max_results=1)
    tags = {TAG_SWEEP: meta["name"], TAG_KIND: "selection", "zsexp.selection": sel_name, "zsexp.k": str(o.k),
            "zsexp.seeds": str(o.seeds), "zsexp.fingerprint": meta["fingerprint"]}
    parent = found[0].info.run_id if found else c.create_run(exp_id, tags=tags, run_name=sel_name).info.run_id
    c.update_run(parent, status="RUNNING")
    ts = int(dt.datetime.now().timestamp() * 1000)
    child_ids = {}
    for r in results:
        pair = f"c{r['candidate']}-s{r['seed']}"
        hit = c.search_runs([exp_id], filter_string=f"tags.`zsexp.selection` = '{sel_name}' and "
                                                    f"tags.`zsexp.pair` = '{pair}'", max_results=1)
        if hit:
            child_ids[pair] = hit[0].info.run_id
            continue
        run = c.create_run(exp_id, run_name=f"{sel_name}-{pair}", tags={
            **tags, TAG_KIND: "selection-run", "mlflow.parentRunId": parent, "zsexp.pair": pair,
            "zsexp.candidate": str(r["candidate"]), "zsexp.seed": str(r["seed"])})
        params = {k: ("x".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in r["config"].items()}
        c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                    metrics=[Metric(f"test_{safe_name(k)}", v, ts, 0) for k, v in r["metrics"].items()])
        c.set_terminated(run.info.run_id)
        child_ids[pair] = run.info.run_id
    metrics = []
    for s in summary:
        for m, st in s["stats"].items():
            metrics.append(Metric(f"c{s['candidate']}_test_{safe_name(m)}_mean", st["mean"], ts, 0))
    if test:
        metrics.append(Metric("wilcoxon_p_value", test["p_value"], ts, 0))
    c.log_batch(parent, metrics=metrics)
    for name in ("report.md", "candidates.png", "history.png", "importance.png", "candidates.json"):
        if (sel_dir / name).is_file():
            c.log_artifact(parent, str(sel_dir / name), artifact_path="report")
    # the winner as a registered retrieval model
    register_as = o.register_as or f"zsexp-{meta['model']}-{meta['dataset_name']}"
    example = _input_example(meta["model"], data, best_seed_run["config"])
    winner_pair = f"c{best_seed_run['candidate']}-s{best_seed_run['seed']}"
    query_kind = "text" if meta["model"] == "zscrgan" else "class"
    winner_run = child_ids[winner_pair]
    existing = [v for v in c.search_model_versions(f"name = '{register_as}'") if v.run_id == winner_run]
    if existing:               # a re-run of a finished selection registers nothing new
        mv = existing[0]
    else:
        with mlflow.start_run(run_id=winner_run):
            info = log_retrieval_model(best_seed_run["model_path"], example, k=o.retrieval_k,
                                       query_kind=query_kind)
        mv = mlflow.register_model(info.model_uri, register_as)
    version_tags = {"zsexp.sweep": meta["name"], "zsexp.objective": objective, "zsexp.mode": mode,
                    "zsexp.test_objective": str(best_seed_run["metrics"][objective]),
                    "zsexp.candidate_config": json.dumps(summary[best_seed_run["candidate"]]["params"], default=str),
                    "zsexp.selection_run": parent}
    version_tags.update({f"test.{safe_name(k)}": str(v) for k, v in best_seed_run["metrics"].items()})
    for k, v in version_tags.items():
        c.set_model_version_tag(register_as, mv.version, k, v)
    c.set_registered_model_alias(register_as, "candidate", mv.version)
    c.set_terminated(parent)
    return {"selection_run": parent, "registered_model": register_as, "version": str(mv.version),
            "model_uri": f"models:/{register_as}@candidate"}


def _input_example(model: str, data, config: dict[str, Any]) -> dict[str, np.ndarray]:
    test_cls = data.test_classes[:2]
    imgs = data.images("test")[:5]
    if model == "zscrgan":
        return {"queries": data.class_embeddings[test_cls].astype(np.float32),
                "gallery": data.features[imgs].astype(np.float32)}
    from zsexp.data import conse_image_representations

    v0 = conse_image_representations(data, data.classes("trainval"), int(config["conse_k"]))
    return {"queries": data.class_embeddings[test_cls].astype(np.float32), "gallery": v0[imgs].astype(np.float32)}


def print_selection(out: dict[str, Any], order: list[dict[str, Any]], space: SearchSpace) -> None:
    obj = out["objective"]
    print(f"[select {out['sweep']}] test {obj} per configuration (mean ± sd [95% CI] over seeds):")
    for s in order:
        print(f"    c{s['candidate']} (trial {s['trial_id']}, val {s['val_objective']:.2f}): "
              f"{_fmt_stats(s['stats'][obj])}")
    t = out["test"]
    if t:
        word = "significant" if t["significant"] else "NOT significant"
        print(f"    winner c{out['winner']} vs runner-up: Wilcoxon p = {t['p_value']:.4f} ({word} at 0.05)")
    print(f"[select {out['sweep']}] report {out['report']}")
    print(f"[select {out['sweep']}] registered {out['registered_model']} version {out['version']} as "
          f"@candidate; load it with mlflow.pyfunc.load_model('{out['model_uri']}')")


# --------------------------------------------------------------------------- promote
def promote(name: str, version: str | None = None, alias: str = "champion", force: bool = False,
            tracking_uri: str | None = None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    from zsexp.tracking import client

    c = client(tracking_uri)
    try:
        mv = c.get_model_version(name, version) if version else c.get_model_version_by_alias(name, "candidate")
    except MlflowException as exc:
        raise ZsexpError(f"model {name!r}: no version {version or '@candidate'} ({str(exc).splitlines()[0]})") from None
    try:
        current = c.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    if current is not None and current.version == mv.version:
        print(f"{name} version {mv.version} already holds @{alias}")
        return {"version": mv.version, "previous": current.version, "changed": False}
    objective = mv.tags.get("zsexp.objective")
    mode = mv.tags.get("zsexp.mode", "max")
    new_val = float(mv.tags.get("zsexp.test_objective", "nan"))
    if current is not None and not force:
        old_val = float(current.tags.get("zsexp.test_objective", "nan"))
        worse = new_val < old_val if mode == "max" else new_val > old_val
        if worse or math.isnan(new_val):
            raise ZsexpError(f"refusing to move @{alias} of {name}: version {mv.version} has test {objective}="
                             f"{new_val:.3f}, worse than the current @{alias} version {current.version} "
                             f"({old_val:.3f}, {mode} is better); pass --force to promote anyway")
    c.set_registered_model_alias(name, alias, mv.version)
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    c.set_model_version_tag(name, mv.version, f"zsexp.previous_{alias}", current.version if current else "none")
    c.set_model_version_tag(name, mv.version, f"zsexp.promoted_{alias}_at", now)
    print(f"{name}: version {mv.version} is now @{alias} (test {objective}={new_val:.3f}); previous holder: "
          f"{current.version if current else 'none'}")
    return {"version": mv.version, "previous": current.version if current else None, "changed": True}


def list_versions(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    from zsexp.tracking import client

    c = client(tracking_uri)
    rows = []
    for found in sorted(c.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        mv = c.get_model_version(name, found.version)          # search results carry no aliases
        rows.append({"version": mv.version, "aliases": list(mv.aliases), "objective": mv.tags.get("zsexp.objective"),
                     "test_objective": mv.tags.get("zsexp.test_objective"), "sweep": mv.tags.get("zsexp.sweep")})
    return rows
