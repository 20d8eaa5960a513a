"""The ``zsexp`` command.  Each subcommand parses, then calls one library function.

Only commands that work end to end are registered; the README's roadmap lists the rest.
Errors are one line on stderr and exit code 2 (bad input) -- never a bare traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from zsexp.errors import ZsexpError


# --------------------------------------------------------------------------- data
def cmd_data_list(args: argparse.Namespace) -> int:
    from zsexp.data import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<22}{'classes':>8}  {'train/val/test':<16}{'image/text dims':<16}")
    for r in rows:
        print(f"{r['name']:<22}{r['classes']:>8}  {r['split']:<16}{r['dims']:<16}")
    print("\nAlso accepted: an xlsa17 directory (res101.mat + att_splits.mat) or a .npz file "
          "(see `zsexp data describe --help`).")
    return 0


def cmd_data_describe(args: argparse.Namespace) -> int:
    from zsexp.data import load_dataset

    info = load_dataset(args.dataset, seed=args.seed).describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"dataset      {info['name']}  ({info['source']})")
    print(f"fingerprint  {info['fingerprint']}")
    print(f"dims         image {info['dims']['image']}, text {info['dims']['text']}"
          + (f", per-image text {info['per_image_text']}" if info["per_image_text"] else "")
          + (f", seen-class probabilities over {info['seen_probs']}" if info["seen_probs"] else ""))
    print(f"size         {info['n_images']} images, {info['n_classes']} classes")
    print(f"{'split':<12}{'classes':>8}{'images':>9}")
    for split, row in info["splits"].items():
        print(f"{split:<12}{row['classes']:>8}{row['images']:>9}")
    return 0


# --------------------------------------------------------------------------- train / evaluate
def cmd_train(args: argparse.Namespace) -> int:
    from zsexp.train import train_run

    out = args.out or f"runs/{args.model}-{args.dataset.replace('/', '_')}-seed{args.seed}"
    if Path(out).exists() and not Path(out).is_dir():
        raise ZsexpError(f"--out {out}: exists and is not a directory")
    train_run(args.model, args.dataset, config_file=args.config, sets=args.set, seed=args.seed,
              data_seed=args.data_seed, out_dir=out, device=args.device, fit_split=args.fit, threads=args.threads)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from zsexp.train import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, split=args.split, dataset=args.dataset, device=args.device)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        base = res.get("baseline")
        split = res["split"]
        print(f"{res['model']} on {res['dataset']} [{split}]"
              + (f"   ({base['model']} baseline and chance on the same split beside it)" if base else
                 "   (chance beside it)"))
        for key, val in res["metrics"].items():
            b = base[split].get(key) if base and base.get(split) else None
            c = res["chance"].get(key)
            print(f"  {key:<20}{val:8.2f}" + (f"   {base['model']} {b:8.2f}" if b is not None else "")
                  + (f"   chance {c:6.2f}" if c is not None else ""))
    return 0


# --------------------------------------------------------------------------- search / resume / status / ui
def cmd_search(args: argparse.Namespace) -> int:
    from zsexp.search.sweep import SweepOptions, run_sweep

    summary = run_sweep(SweepOptions(
        model=args.model, dataset=args.dataset, space=args.space, trials=args.trials, gpus=args.gpus,
        gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent,
        sampler=args.sampler, scheduler=args.scheduler, seed=args.seed, data_seed=args.data_seed, name=args.name,
        storage=args.storage, address=args.address, tracking_uri=args.tracking_uri, experiment=args.experiment,
        sets=tuple(args.set), retries=args.retries, max_failed_trials=args.max_failed_trials,
        keep_checkpoints=args.keep_checkpoints, device=args.device,
        progress_every_s=args.progress_every, warm_start=args.warm_start))
    return 0 if summary.get("complete", True) else 130


def cmd_resume(args: argparse.Namespace) -> int:
    from zsexp.search.sweep import resume_sweep

    summary = resume_sweep(args.name, storage=args.storage, address=args.address, retry_errored=args.retry_errored,
                           trust_storage=args.trust_storage, trials=args.trials)
    return 0 if summary.get("complete", True) else 130


def cmd_status(args: argparse.Namespace) -> int:
    from zsexp.search.status import list_sweeps, sweep_status
    from zsexp.search.storage import sweeps_root

    if args.name is None:                   # every sweep, a line each
        rows = list_sweeps(args.storage)
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        if not rows:
            print(f"no sweeps under {sweeps_root(args.storage)} (start one with `zsexp search MODEL`)")
            return 0

        def num(v: float | None, sign: bool = False) -> str:
            return "-" if v is None else (f"{v:+.3f}" if sign else f"{v:.3f}")
        print(f"{'sweep':<34}{'model':<9}{'dataset':<20}{'status':<11}{'trials':>9}  {'objective':<20}"
              f"{'best':>9}{'baseline':>10}{'margin':>9}{'chance':>9}")
        for r in rows:
            if "error" in r:
                print(f"{r['name']:<34}unreadable: {r['error']}")
                continue
            obj = f"val {r['metric']} ({r['mode']})"
            print(f"{r['name']:<34}{r['model']:<9}{r['dataset'][:19]:<20}{r['status']:<11}"
                  f"{r['finished']:>4}/{r['trials']:<4}  {obj:<20}{num(r['best']):>9}{num(r['baseline']):>10}"
                  f"{num(r['margin'], True):>9}{num(r['chance']):>9}")
        print("details of one: zsexp status NAME")
        return 0
    st = sweep_status(args.name, storage=args.storage, trust_storage=args.trust_storage)
    if args.json:
        print(json.dumps({**st, "meta": st["meta"].to_json(), "trials": [t.to_json() for t in st["trials"]]},
                         indent=2, default=str))
        return 0
    m = st["meta"]
    print(f"sweep {m.name}: {m.model} on {m.dataset_name}, {m.trials} trials, status {m.status}")
    print(f"  storage {m.dir}")
    print(f"  MLflow {m.tracking_uri} experiment {m.experiment!r}, parent run {m.parent_run_id}")
    print(f"  objective val {st['metric']} ({st['mode']})")
    print(f"  reference: {st['reference']}")
    for g in m.grown:
        print(f"  grown from {g.get('from')} to {g.get('to')} trials ({str(g.get('at', ''))[:19]})")
    if m.warm_start:
        print(f"  warm-started from sweep {m.warm_start.get('sweep')!r}: {m.warm_start.get('taken')} trial(s) taken, "
              f"{m.warm_start.get('skipped')} skipped")
    print(f"  {'trial':<14}{'status':<12}{'outcome':<15}{'rounds':>7}{'best':>10}")
    for t in st["trials"]:
        best = "-" if t.best is None else f"{t.best:.3f}"
        print(f"  {t.trial_id:<14}{t.status:<12}{(t.outcome or '-'):<15}{t.rounds:>7}{best:>10}")
    from zsexp.search.status import show_links

    show_links(m, None)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from zsexp.tracking import start_ui

    links = None
    if args.sweep:
        from zsexp.search.space import parse_space
        from zsexp.search.status import show_links
        from zsexp.search.storage import read_meta

        meta = read_meta(args.sweep, args.storage)
        space = parse_space(meta.space, meta.space_source, meta.model)
        args.tracking_uri = args.tracking_uri or meta.tracking_uri

        def links(ui: str) -> None:
            show_links(meta, space, ui)
    return start_ui(args.tracking_uri, args.host, args.port, links)


# --------------------------------------------------------------------------- select / promote
def cmd_select(args: argparse.Namespace) -> int:
    from zsexp.selection import SelectOptions, run_selection

    run_selection(SelectOptions(sweep=args.sweep, k=args.k, seeds=args.seeds, storage=args.storage,
                                address=args.address, register_as=args.register_as, retrieval_k=args.retrieval_k,
                                trust_storage=args.trust_storage))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from zsexp.ablation import AblateOptions, describe_variants, run_ablation

    if args.list_variants:
        print(describe_variants(args.model))
        return 0
    run_ablation(AblateOptions(
        model=args.model, dataset=args.dataset, source=args.from_sweep, variants=args.variants, seeds=args.seeds,
        data_seeds=tuple(args.data_seeds) if args.data_seeds else None, sets=tuple(args.set),
        config_file=args.config, name=args.name, storage=args.storage, sweep_storage=args.sweep_storage,
        address=args.address, gpus=args.gpus, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent, tracking_uri=args.tracking_uri,
        experiment=args.experiment, device=args.device))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from zsexp.registry import list_versions, promote

    if args.list:
        rows = list_versions(args.name, args.tracking_uri)
        print(f"{'version':<9}{'aliases':<24}{'val mean (chose it)':<32}{'test mean (report)':<20}sweep")
        for r in rows:
            val = f"{r['objective']}={float(r['val_objective_mean']):.3f}" if r["val_objective_mean"] else "-"
            tst = f"{float(r['test_objective']):.3f}" if r["test_objective"] else "-"
            print(f"{r['version']:<9}{','.join(r['aliases']) or '-':<24}{val:<32}{tst:<20}{r['sweep'] or '-'}")
        return 0
    promote(args.name, version=args.version, alias=args.alias, force=args.force, tracking_uri=args.tracking_uri)
    return 0


def model_config_help(family: str | None, dataset: str | None = None) -> str:
    """Every config key of a model: default, allowed values, help text; then the dataset defaults
    that replace paper defaults (built-in datasets, or the size rule for a given ``dataset``)."""
    import dataclasses

    from zsexp.config import describe_field
    from zsexp.data.synthetic import SPECS
    from zsexp.models import MODELS, dataset_defaults, size_defaults

    lines = []
    for name, spec in MODELS.items():
        if family and name != family:
            continue
        lines.append(f"{name} config keys (--set KEY=VALUE; paper default, allowed values, meaning):")
        for f in dataclasses.fields(spec.config_cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"  {f.name:<18} {default!s:<14} {describe_field(f):<32} {f.metadata.get('help', '')}")
        built_in = [(ds, s.defaults.get(name)) for ds, s in SPECS.items() if s.defaults.get(name)]
        if built_in:
            lines.append("  dataset defaults (replace the paper's on that data):")
            lines.extend(f"    {ds}: " + ", ".join(f"{k}={v}" for k, v in d.items()) for ds, d in built_in)
        lines.append("  " + size_defaults.__doc__.strip().splitlines()[0])
        if dataset:
            from zsexp.data import load_dataset

            try:
                data = load_dataset(dataset)
                d = dataset_defaults(name, data)
                lines.append(f"  on {dataset}: " + (", ".join(f"{k}={v}" for k, v in d.items()) if d
                                                     else "the paper defaults"))
            except ZsexpError as exc:
                lines.append(f"  ({exc})")
        lines.append("")
    return "\n".join(lines)


def _models() -> tuple[str, ...]:
    from zsexp.names import MODEL_NAMES

    return MODEL_NAMES


class _ModelHelp(argparse.Action):
    """``-h``: the command's help, then the chosen model's config keys (all models when none is given yet)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        print()
        print(model_config_help(getattr(namespace, "model", None), getattr(namespace, "dataset", None)))
        parser.exit()


# --------------------------------------------------------------------------- parser
class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), pointing at ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{one_line(f'{self.prog}: error: {message}')} (see `{self.prog} --help`)\n")


MAX_SEED = 2**32 - 1             # numpy's and torch's seed range


def _bounded(kind: type, lo: float, hi: float):
    """An argparse type: a number of ``kind`` in [lo, hi] (finite), checked before anything starts, so no
    value reaches a library that would crash on it (a seed past 2**32, a thread count past the CPUs)."""
    def parse(text: str):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be a finite number between {lo:g} and {hi:g}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


SEED = _bounded(int, 0, MAX_SEED)
GPUS, GPU_SHARE, CPUS = _bounded(float, 0, 100_000), _bounded(float, 0, 1_000), _bounded(float, 0, 10_000)
CONCURRENT, COUNT, SECONDS = _bounded(int, -1, 100_000), _bounded(int, 0, 1_000_000), _bounded(float, 0, 604_800)
THREADS, RETRIEVAL_K = _bounded(int, 1, max(1, os.cpu_count() or 1)), _bounded(int, 1, 1_000_000)


def _add_data(sub) -> None:
    p_data = sub.add_parser("data", help="list and describe datasets",
                            description="List built-in datasets and describe any dataset.")
    data_sub = p_data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p = data_sub.add_parser("list", help="list built-in synthetic datasets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_data_list)
    p = data_sub.add_parser(
        "describe", help="sizes, dimensions, classes and images per split, fingerprint",
        description="Describe a dataset: a built-in name, an xlsa17 directory (res101.mat + att_splits.mat), "
                    "or a .npz file with arrays features, labels, class_embeddings, train_classes, "
                    "val_classes, test_classes (optional: class_names, test_seen_images, text_features, "
                    "seen_probs, prob_classes).")
    p.add_argument("dataset", metavar="NAME-or-PATH")
    p.add_argument("--seed", type=SEED, default=0, help="seed of a synthetic dataset (default 0)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_data_describe)
    p_data.set_defaults(func=lambda a: (p_data.print_help(), 2)[1])


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train one model on one dataset (progress, metrics.json, checkpoints)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one model: rounds of E-M iterations (ZSCRGAN) or alternating steps (CM-GAN), "
                    "one closed-form fit (ridge, ridge-zsl: the tasks' baselines), validation after each, "
                    "best/last checkpoints, then test metrics of the best-on-validation model, printed beside "
                    "chance and the task's baseline on the same split.  Config precedence: paper defaults < "
                    "dataset (size) defaults < --config YAML < --set.  `zsexp train MODEL [--dataset D] --help` "
                    "lists MODEL's keys with defaults and ranges (and the defaults D gets).",
        add_help=False)
    p.add_argument("-h", "--help", action=_ModelHelp, help="show this help and the model's config keys")
    p.add_argument("model", choices=list(_models()))
    p.add_argument("--dataset", default="synthetic-tiny", help="built-in name, xlsa17 directory or .npz file")
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key (repeatable)")
    p.add_argument("--seed", type=SEED, default=0, help="model seed (default 0)")
    p.add_argument("--data-seed", type=SEED, default=0, help="seed of a synthetic dataset (default 0)")
    p.add_argument("--threads", type=THREADS, help="intra-op CPU threads (default: torch's, one per core); on a "
                                              "shared or loaded machine 1-2 is often much faster")
    p.add_argument("--fit", choices=["train", "trainval"], default="train",
                   help="classes to fit on: train (val held out for tuning) or trainval (final model)")
    p.add_argument("--out", help="output directory (default runs/MODEL-DATASET-seedS)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    p.set_defaults(func=cmd_train)


def _add_search(sub) -> None:
    p = sub.add_parser(
        "search", help="hyperparameter sweep on Ray Tune + Optuna + ASHA, tracked in MLflow",
        description="Run a sweep: Ray Tune schedules trials (a local Ray unless --address), Optuna samples "
                    "(through Ray's OptunaSearch), ASHA stops weak trials on the round axis, MLflow records a "
                    "parent run per sweep and a child run per trial.  The objective is a metric on the "
                    "VALIDATION classes; test classes are never seen during a sweep.")
    p.add_argument("model", choices=list(_models()))
    p.add_argument("--space", help="search-space YAML (default search_spaces/MODEL.yaml)")
    p.add_argument("--dataset", default="synthetic-tiny", help="built-in name, xlsa17 directory or .npz file")
    p.add_argument("--trials", type=int, default=8, help="number of trials (default 8, at most 100,000)")
    p.add_argument("--gpus", type=GPUS, default=0, help="the sweep's total GPU budget (default 0: CPU trials)")
    p.add_argument("--gpus-per-trial", type=GPU_SHARE, help="GPU fraction per trial (default 1; needs --gpus)")
    p.add_argument("--cpus-per-trial", type=CPUS, default=1.0, help="CPUs per trial (default 1)")
    p.add_argument("--max-concurrent", type=CONCURRENT, help="cap on trials at once (default: what resources allow)")
    p.add_argument("--sampler", choices=["tpe", "random", "cmaes", "qmc", "gp", "grid"],
                   help="override the space's sampler (grid: every param categorical)")
    p.add_argument("--scheduler", choices=["asha", "none"], help="override the space's scheduler")
    p.add_argument("--seed", type=SEED, default=0, help="sampler and model seed (default 0)")
    p.add_argument("--data-seed", type=SEED, default=0)
    p.add_argument("--name", help="sweep name (default MODEL-DATASET-TIMESTAMP)")
    p.add_argument("--storage", help="Ray storage path, shared on a cluster (default $ZSEXP_HOME/sweeps)")
    p.add_argument("--address", help="Ray cluster address to join (default: start a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or SQLite in ZSEXP_HOME)")
    p.add_argument("--experiment", help="MLflow experiment (default zsexp-MODEL-DATASET)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fix a config key for all trials")
    p.add_argument("--retries", type=_bounded(int, 0, 100), default=2,
                   help="times a trial whose worker died is retried from its checkpoint (default 2; a diverged "
                        "trial is not retried)")
    p.add_argument("--max-failed-trials", type=COUNT, help="stop the sweep once more trials than this failed")
    p.add_argument("--keep-checkpoints", type=COUNT, help="keep only the N best checkpoints per trial (default: all; "
                   "with N, a killed sweep may find its last checkpoint deleted, ray-project/ray#27790)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda inside trials")
    p.add_argument("--progress-every", type=SECONDS, default=5.0, help="seconds between progress lines")
    p.add_argument("--warm-start", metavar="SWEEP",
                   help="start the sampler from an earlier sweep's completed trials (a sweep of the same --storage; "
                        "same model, dataset "
                        "fingerprint and objective; the space may differ): those inside this space are given to "
                        "Optuna as finished trials, not re-run and not counted in --trials; the others are listed "
                        "as skipped")
    p.set_defaults(func=cmd_search)


def _add_resume(sub) -> None:
    p = sub.add_parser("resume", help="continue an interrupted sweep where it stopped, or grow it (--trials N)",
                       description="Continue a sweep after the driver died: finished trials are kept, interrupted "
                                   "ones continue from their last checkpoint, the Optuna sampler keeps its history, "
                                   "MLflow runs are re-attached.  With --trials N a finished (or interrupted) sweep "
                                   "runs on to N trials in all: the same Optuna study samples the new trials with "
                                   "every earlier one in view, ASHA's rungs keep the earlier results, and the new "
                                   "child runs join the same MLflow parent run.")
    p.add_argument("name")
    p.add_argument("--trials", type=COUNT, metavar="N",
                   help="grow the sweep to N trials in total (N at least its current count; a grid sweep at most "
                        "its grid)")
    p.add_argument("--storage", help="where the sweep lives (default $ZSEXP_HOME/sweeps)")
    p.add_argument("--address", help="Ray cluster address to join")
    p.add_argument("--retry-errored", action="store_true", help="also retry failed trials from their checkpoint")
    p.add_argument("--trust-storage", action="store_true",
                   help="accept Tune state files this user's zsexp did not sign (a sweep moved between users or "
                        "machines, or made before signatures): check them first, they are then signed as yours")
    p.set_defaults(func=cmd_resume)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="state of a sweep: trials, outcomes, best values",
                       description="Show a sweep's trials (read-only; works while it runs or after it stopped).  "
                                   "Without NAME: every sweep, a line each (status, trials finished, best "
                                   "validation value beside the baseline and chance).")
    p.add_argument("name", nargs="?", help="the sweep (default: list every sweep)")
    p.add_argument("--storage", help="where the sweeps live (default $ZSEXP_HOME/sweeps)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--trust-storage", action="store_true",
                   help="accept Tune state files this user's zsexp did not sign (a sweep moved between users or "
                        "machines, or made before signatures): check them first, they are then signed as yours")
    p.set_defaults(func=cmd_status)


def _add_ui(sub) -> None:
    p = sub.add_parser("ui", help="open the MLflow UI on zsexp's tracking store",
                       description="Start `mlflow ui` on zsexp's store (SQLite under $ZSEXP_HOME by default).  With "
                                   "SWEEP, first print a link that opens that sweep's trials (objective and searched "
                                   "parameters as columns, best first) and one to their compare view.")
    p.add_argument("sweep", nargs="?", help="a sweep whose trials the printed links open")
    p.add_argument("--storage", help="where the sweep lives (default $ZSEXP_HOME/sweeps)")
    p.add_argument("--tracking-uri")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)


def _add_select(sub) -> None:
    p = sub.add_parser(
        "select", help="final selection: top configs x seeds, chosen on validation, reported on test, registered",
        description="Final-selection job: the sweep's top-k configurations (validation objective, each with the "
                    "round budget at which its trial reached it) are trained with several seeds on the train "
                    "classes and ranked by their mean validation objective (the decision), and trained again on "
                    "train + val and evaluated once on the unseen test classes (the report: mean, sd, 95%% CI, "
                    "Wilcoxon winner vs runner-up; Markdown + PNG; MLflow).  The winner's seed nearest its mean "
                    "validation value is registered with alias `candidate`.  Test classes never decide anything.  "
                    "Running it again skips finished runs.")
    p.add_argument("sweep")
    p.add_argument("--k", type=_bounded(int, 0, 1_000), default=5, help="configurations to take (default 5)")
    p.add_argument("--seeds", type=_bounded(int, 0, 1_000), default=5, help="seeds per configuration (default 5)")
    p.add_argument("--storage", help="where the sweep lives (default $ZSEXP_HOME/sweeps)")
    p.add_argument("--address", help="Ray cluster address to join")
    p.add_argument("--register-as", help="registered model name (default zsexp-MODEL-DATASET)")
    p.add_argument("--retrieval-k", type=RETRIEVAL_K, default=50, help="default top-k the served model returns")
    p.add_argument("--trust-storage", action="store_true",
                   help="accept Tune state files this user's zsexp did not sign (a sweep moved between users or "
                        "machines, or made before signatures): check them first, they are then signed as yours")
    p.set_defaults(func=cmd_select)


def _add_ablate(sub) -> None:
    p = sub.add_parser(
        "ablate", help="a paper's ablation table (or named variants) over seeds and data splits, on Ray, in MLflow",
        description="Ablation job: every row (the paper's table, default: ZSCRGAN Table 8, CM-GAN Table 5; or "
                    "named variants) x seed x data split is one Ray trial, fitted on train + val for a fixed "
                    "budget and evaluated once on the unseen test classes.  The table: mean ± sd [95%% CI] per "
                    "cell, a paired Wilcoxon test of every row against the complete model over test queries / "
                    "images, the task's baseline and chance on the same splits, the paper's figures beside; "
                    "Markdown + HTML + plot, and MLflow (one ablation run, a nested run per model).  Base "
                    "configuration: the dataset's defaults (with --config/--set), or a sweep's winner (--from).  "
                    "Running the same command again skips finished runs.")
    p.add_argument("model", choices=list(_models()), help="a family with a paper ablation table (zscrgan, cmgan)")
    p.add_argument("--dataset", help="built-in name, xlsa17 directory, UCI digits directory or .npz file (default "
                                     "synthetic-tiny, or the --from sweep's)")
    p.add_argument("--from", dest="from_sweep", metavar="SWEEP",
                   help="start from this sweep's winner (its final selection's, else its best trial) and budget")
    p.add_argument("--variants", default="table",
                   help="`table` (default) or comma-separated names: ablation values (no_gan, conse, ...) or "
                        "KEY=VALUE (training=joint, wrong_class=kmeans, mode=sentence); see --list-variants")
    p.add_argument("--list-variants", action="store_true", help="print the model's table rows and named variants")
    p.add_argument("--seeds", type=_bounded(int, 0, 1_000), default=3, help="model seeds per row and split (default 3)")
    p.add_argument("--data-seeds", type=SEED, nargs="+", metavar="S",
                   help="data splits (seeds of a synthetic set or of the UCI digits' class split; default 0, or "
                        "the --from sweep's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key of the base configuration (repeatable)")
    p.add_argument("--config", help="YAML file of config keys for the base configuration")
    p.add_argument("--name", help="the job's name (default MODEL-DATASET-ablation[-from-SWEEP]); the same name "
                                  "resumes it")
    p.add_argument("--storage", help="where ablations live (default $ZSEXP_HOME/ablations; shared on a cluster)")
    p.add_argument("--sweep-storage", help="where the --from sweep lives (default $ZSEXP_HOME/sweeps)")
    p.add_argument("--address", help="Ray cluster address to join (default: start a local Ray)")
    p.add_argument("--gpus", type=GPUS, help="GPU budget (default 0, or the --from sweep's)")
    p.add_argument("--gpus-per-trial", type=GPU_SHARE, help="GPU fraction per run (default 1 with --gpus)")
    p.add_argument("--cpus-per-trial", type=CPUS, help="CPUs per run (default 1, or the sweep's)")
    p.add_argument("--max-concurrent", type=CONCURRENT, help="cap on runs at once")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, SQLite in ZSEXP_HOME, "
                                          "or the sweep's)")
    p.add_argument("--experiment", help="MLflow experiment (default zsexp-MODEL-DATASET, or the sweep's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda inside runs")
    p.set_defaults(func=cmd_ablate)


def _add_promote(sub) -> None:
    p = sub.add_parser("promote", help="move a registry alias (default champion) to a model version",
                       description="Point an alias of a registered model at a version (default: the @candidate "
                                   "version, chosen on validation by `zsexp select`).  The recorded test means are "
                                   "used only to refuse a regression: exit 2 when the version's configuration has a "
                                   "worse test mean than the current holder's, unless --force.  Records the previous "
                                   "holder and the time as tags.  --list shows versions, aliases, validation and test "
                                   "means.")
    p.add_argument("name")
    p.add_argument("--version", help="model version (default: the one with alias candidate)")
    p.add_argument("--alias", default="champion")
    p.add_argument("--force", action="store_true")
    p.add_argument("--list", action="store_true", help="list versions, aliases, validation and test means")
    p.add_argument("--tracking-uri")
    p.set_defaults(func=cmd_promote)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="reload a checkpoint and evaluate it",
                       description="Reload a checkpoint written by `zsexp train` and evaluate a split.")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--dataset", help="dataset to evaluate on (default: the one it was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="zsexp",
        description="Hyperparameter search and experiment tracking for zero-shot cross-modal GANs "
                    "(CM-GAN, ZSCRGAN).  State lives under $ZSEXP_HOME (default ~/.zsexp).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_data(sub)
    _add_train(sub)
    _add_search(sub)
    _add_resume(sub)
    _add_status(sub)
    _add_ui(sub)
    _add_select(sub)
    _add_ablate(sub)
    _add_promote(sub)
    _add_evaluate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`zsexp train zscrgan --help | head`): stop quietly, as other command-line
        # tools do; the remaining output goes nowhere instead of raising again at interpreter exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141          # 128 + SIGPIPE, the shell's status for a command its reader closed


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


MAX_TOKEN, MAX_LINE = 240, 800         # an error line stays readable whatever value it echoes


def one_line(message: str) -> str:
    """A message as one plain line: ANSI codes and other control characters removed, line breaks and runs
    of spaces folded, and cut to a readable length: a word (a value, a path) longer than
    :data:`MAX_TOKEN` characters keeps its start and end (a path its file name), a line longer than
    :data:`MAX_LINE` its start and end."""
    words = []
    for w in _ANSI.sub("", message).split():
        w = "".join(ch if ch.isprintable() else "?" for ch in w)
        words.append(w if len(w) <= MAX_TOKEN else f"{w[:100]}...({len(w)} characters)...{w[-60:]}")
    line = " ".join(words)
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE - 160]} ... {line[-140:]}"


def _error_log(exc: BaseException) -> Path | None:
    """The full report of an unexpected error, in a per-user temp folder (never in the sweep storage)."""
    import datetime as dt
    import tempfile
    import traceback

    try:
        folder = Path(tempfile.gettempdir()) / f"zsexp-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"error-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)))
        return path
    except OSError:
        return None


def _sigterm_as_interrupt(signum, frame) -> None:
    """SIGTERM (what a cluster scheduler sends) stops a sweep as Ctrl-C does: Tune's own SIGINT handling
    saves its state and the command ends resumable."""
    os.kill(os.getpid(), signal.SIGINT)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.func in (cmd_search, cmd_resume, cmd_select, cmd_ablate):
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        from zsexp.env import check_environment

        check_environment()              # before any directory, study, run or Ray process exists
        return int(args.func(args) or 0)
    except ZsexpError as exc:
        print(f"zsexp: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zsexp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure: one line, the details in a file
        log = _error_log(exc)
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
        where = f" (full report: {log})" if log else ""
        print(f"zsexp: error: {type(exc).__name__}: {one_line(first)[:300]}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
