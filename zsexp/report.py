"""The final-selection report: Markdown with PNG plots (candidates, sweep history, importances)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from zsexp.meta import SweepMeta, TrialRecord
from zsexp.protocol import PLURAL, PROTOCOL, SEED_RULE, Decision, fmt_stats
from zsexp.search.space import SearchSpace


def write_report(meta: SweepMeta, space: SearchSpace, d: Decision, sel_dir: Path,
                 trials: list[TrialRecord]) -> Path:
    """``report.md`` and ``report.html`` of a final selection, with its plots, in ``sel_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    plot_candidates(d, sel_dir / "candidates.png")
    study = _sweep_study(trials, space)
    hist_ok = plot_history(study, space, sel_dir / "history.png")
    imp_ok = plot_importance(study, sel_dir / "importance.png")
    lines = [*_summary_lines(meta, space, d), *_winner_lines(d), *_registered_lines(d, hist_ok, imp_ok)]
    report = sel_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (sel_dir / "report.html").write_text(markdown_to_html(lines, sel_dir, title=f"Final selection: {meta.name}"))
    return report


def plot_candidates(d: Decision, path: Path) -> None:
    """Validation (decides) and test (report only) over seeds per candidate, side by side; the task's
    baseline and chance as lines on the test panel."""
    import matplotlib.pyplot as plt

    summary, b = d.summary, d.baseline
    obj, tobj = d.objective, d.test_objective
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, (label, get) in zip(axes, (
            (f"val {obj} (decides)", lambda s: list(s["val_by_seed"].values())),
            (f"test {tobj} (report only)", lambda s: [r["metrics"][tobj] for r in _test_runs(d, s)])), strict=True):
        for i, s in enumerate(summary):
            vals = get(s)
            ax.scatter([i] * len(vals), vals, alpha=0.7)
            ax.errorbar(i, float(np.mean(vals)), yerr=float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                        fmt="_", color="k", capsize=6)
        if label.startswith("test") and b:           # the references on the same test split
            ax.axhline(b["metrics"][tobj], ls="--", color="tab:red", label=f"{b['model']} (baseline)")
            if tobj in b["chance"]:
                ax.axhline(b["chance"][tobj], ls=":", color="grey", label="chance")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(summary)), [f"c{s['candidate']}" + ("*" if s["candidate"] == d.winner else "")
                                            for s in summary])
        ax.set_title(label, fontsize=10)
    fig.suptitle("Candidates: dots = seeds, bar = mean ± sd, * = winner", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(study: Any, space: SearchSpace, path: Path) -> bool:
    """The sweep's optimisation history on the validation classes; False when it has no trial."""
    import matplotlib.pyplot as plt

    if len(study.trials) < 1:
        return False
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_importance(study: Any, path: Path) -> bool:
    """Optuna's parameter importances (fANOVA); False when there are too few trials to compute them."""
    import matplotlib.pyplot as plt
    import optuna

    if len(study.trials) < 3:
        return False
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return False
    if not importances:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (Optuna fANOVA)")
    ax.set_title("Hyper-parameter importance for the validation objective")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _summary_lines(meta: SweepMeta, space: SearchSpace, d: Decision) -> list[str]:
    summary, order = d.summary, d.order
    obj, tobj = d.objective, d.test_objective
    lines = [f"# Final selection: sweep `{meta.name}`", "",
             f"{meta.model} on {meta.dataset_name} (fingerprint {meta.fingerprint}): top {len(summary)} "
             f"configurations of the sweep by validation {space.metric} ({space.mode}), {order[0]['val']['n']} "
             f"seeds each.", "",
             f"**Protocol.** {PROTOCOL}", "",
             f"| candidate | sweep trial | budget (rounds) | sweep val | val {obj} (decides) | test {tobj} (report) |",
             "|---|---|---|---|---|---|"]
    for s in order:
        name = f"c{s['candidate']}" + (" (winner)" if s["candidate"] == d.winner else "")
        lines.append(f"| {name} | {s['trial_id']} | {s['budget_rounds']} | {s['sweep_val']:.2f} | "
                     f"{fmt_stats(s['val'])} | {fmt_stats(s['stats'][tobj])} |")
    return lines


def _winner_lines(d: Decision) -> list[str]:
    """The winner against the runner-up and against the task's baseline, with their paired tests."""
    from zsexp.protocol import margin

    order, test, b = d.order, d.test, d.baseline
    obj, tobj = d.objective, d.test_objective
    w = order[0]
    lines = ["", f"## Winner: c{w['candidate']} (sweep trial {w['trial_id']})", ""]
    if test:
        ru = order[1]
        dv = w["val"]["mean"] - ru["val"]["mean"]
        dt = w["stats"][tobj]["mean"] - ru["stats"][tobj]["mean"]
        verdict = "significant" if test["significant"] else "**not significant**"
        lines.append(f"Chosen over the runner-up c{ru['candidate']} by {dv:+.2f} points of mean validation {obj}. "
                     f"On test the difference is {dt:+.2f} points of {tobj}; paired Wilcoxon signed-rank test over "
                     f"{test['n']} test classes (per-class values averaged over seeds): p = {test['p_value']:.4f}, "
                     f"{verdict} at 0.05.")
    if b:
        t = b["test"]
        bw = b["metrics"].get(tobj)
        gain = margin(w["stats"][tobj]["mean"], bw, d.test_mode)
        verdict = "significant" if t["significant"] else "**not significant**"
        lines += ["", f"Beside the task's baseline on the same split: {b['model']} (lam = {b['lam']:g}, "
                      f"{b['chosen_by']}; refitted on train + val like the winner) scores {bw:.2f} test {tobj}; "
                      f"the winner is {abs(gain):.2f} points {'better' if gain > 0 else '**worse**'}.  Paired Wilcoxon "
                      f"signed-rank test over the {t['n']} test {PLURAL[t['unit']]} (winner's values averaged over "
                      f"seeds): "
                      f"p = {t['p_value']:.4f}, {verdict} at 0.05."]
    lines += ["", "All test metrics of the winner (final models fitted on train + val), the baseline and chance "
                  "on the same test split:", "",
              "| metric | winner mean ± sd [95% CI] | baseline | chance |", "|---|---|---|---|"]
    for m, st in w["stats"].items():
        bv = b["metrics"].get(m) if b else None
        cv = b["chance"].get(m) if b else None
        lines.append(f"| {m} | {fmt_stats(st)} | {'-' if bv is None else f'{bv:.2f}'} | "
                     f"{'-' if cv is None else f'{cv:.2f}'} |")
    return lines


def _registered_lines(d: Decision, hist_ok: bool, imp_ok: bool) -> list[str]:
    w, reg = d.order[0], d.registered_run
    obj, tobj = d.objective, d.test_objective
    lines = ["", "Winner configuration (searched keys):", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in w["params"].items()]
    lines += ["", f"Registered model: the seed {d.seed} final model of the winner ({SEED_RULE}; its validation "
                  f"{obj} {w['val_by_seed'][d.seed]:.2f}, its test {tobj} {reg['metrics'][tobj]:.2f}).", "",
              "![candidates](candidates.png)"]
    if hist_ok:
        lines.append("![history](history.png)")
    if imp_ok:
        lines.append("![importance](importance.png)")
    else:
        lines.append("(Parameter importances need at least 3 completed sweep trials with varied values.)")
    return lines


def markdown_to_html(lines: list[str], base: Path, title: str) -> str:
    """The report's Markdown as one self-contained HTML page: headings, paragraphs, tables, and the
    PNG figures embedded as data URIs, so it opens as it is in MLflow's artifact viewer."""
    import base64
    import html
    import re

    def inline(text: str) -> str:
        t = html.escape(text)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    out, table = [], []

    def flush_table() -> None:
        if not table:
            return
        rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table if not set(r) <= set("|-: ")]
        out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in rows[0]) + "</tr>")
        out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        out.append("</table>")
        table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        img = re.fullmatch(r"!\[(.*?)\]\((.+?)\)", line.strip())
        if img and (base / img.group(2)).is_file():
            data = base64.b64encode((base / img.group(2)).read_bytes()).decode()
            out.append(f'<p><img alt="{html.escape(img.group(1))}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "font-size:14px}th{background:#f3f3f3}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _test_runs(d: Decision, s: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((r for r in d.test_runs if r["candidate"] == s["candidate"]), key=lambda r: r["seed"])


def _sweep_study(trials: list[TrialRecord], space: SearchSpace):
    """The sweep's trials as an Optuna study (for history and importances), in trial order."""
    import optuna

    dists = space.distributions()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if space.mode == "max" else "minimize")
    for t in sorted(trials, key=lambda t: t.trial_id):
        val = t.best
        if val is None or not math.isfinite(val):
            continue
        params = {k: t.config[k] for k in dists if k in t.config}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params},
                                                  value=float(val)))
    return study
