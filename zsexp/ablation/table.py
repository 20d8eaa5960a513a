"""The ablation table: cells over seeds and splits, paired tests against the complete model, the task's
baseline and chance on the same splits, the paper's figures beside; Markdown, HTML and one plot.

Statistics.  A cell is the mean ± sd of a metric over every run of the row (seeds x splits) with a
95% t-interval over those runs.  The paired test of a row against the complete model is a Wilcoxon
signed-rank test over the test *units* (queries for retrieval, images for ZSL) of every split, each
unit's value averaged over the seeds; the baseline row is tested the same way on the same units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from zsexp.protocol import PLURAL, fmt_stats


def baselines_on(model: str, datas: dict[int, Any], ref_cfg: dict[int, Any]) -> dict[int, dict[str, Any] | None]:
    """Per data split: the task's baseline (tuned on validation, fitted on train + val like the rows,
    evaluated once on test, with each unit's values), or None where the task has none or it failed."""
    from zsexp.baselines import safe_baseline

    out = {}
    for d, data in datas.items():
        base = safe_baseline(model, data, "trainval", ref_cfg[d], log=print, per_query=True)
        out[d] = None if base is None or "error" in base else base
    return out


def _units(objective: str, run: dict[str, Any], ncand: dict[str, int]) -> np.ndarray | None:
    from zsexp.selection import per_unit_values

    try:
        return per_unit_values(objective, run["per"], ncand)
    except (KeyError, ValueError, TypeError):
        return None          # a run of another task (CM-GAN's sentence mode): no units of this objective


def summarise_table(plan: Any, results: list[dict[str, Any]], ref: int, baseline: dict[int, Any],
                    datas: dict[int, Any], seeds: int) -> dict[str, Any]:
    from zsexp.ablation.paper import table_of
    from zsexp.models import get_spec
    from zsexp.selection import test_candidate_counts

    spec = get_spec(plan.model)
    table_def = table_of(plan.model)
    ncand = {d: test_candidate_counts(data) for d, data in datas.items()}
    ref_key = plan.variants[ref].key
    ref_runs = [r for r in results if r["variant"] == ref_key and not r.get("diverged")]
    metrics = [m for m in table_def.metrics if ref_runs and all(m in r["metrics"] for r in ref_runs)] or \
        [m for m in table_def.metrics if any(m in r["metrics"] for r in results)]
    kind = paper_dataset(plan.dataset_name, table_def)
    ref_units = _row_units(plan, results, ref_key, spec.objective, ncand)
    rows = [_row(plan, results, i, ref, metrics, ref_units, spec, ncand, table_def, kind)
            for i in range(len(plan.variants))]
    chance: dict[str, float] = {}
    for m in metrics:
        vals = [r["chance"][m] for r in ref_runs if r["seed"] == 0 and m in r.get("chance", {})]
        if len(vals) == len(plan.data_seeds):
            chance[m] = float(np.mean(vals))
    return {"model": plan.model, "dataset": plan.dataset, "dataset_name": plan.dataset_name, "title": table_def.title,
            "base": plan.base, "budget": plan.budget, "seeds": seeds, "data_seeds": list(plan.data_seeds),
            "objective": spec.objective, "mode": spec.mode, "unit": spec.unit, "metrics": metrics,
            "complete": ref_key, "n_units": None if ref_units is None else int(ref_units.size), "rows": rows,
            "baseline": _baseline_row(plan, baseline, metrics, ref_units, spec, ncand),
            "chance": chance, "paper_dataset": kind, "paper_source": table_def.source}


def _row_units(plan: Any, results: list[dict[str, Any]], key: str, objective: str,
               ncand: dict[int, Any]) -> np.ndarray | None:
    """The row's per-unit objective values, each averaged over seeds, splits one after another."""
    parts = []
    for d in plan.data_seeds:
        per_seed = [None if r.get("diverged") else _units(objective, r, ncand[d])
                    for r in results if r["variant"] == key and r["data_seed"] == d]
        if not per_seed or any(u is None for u in per_seed) or len({u.shape for u in per_seed}) != 1:
            return None
        parts.append(np.mean(per_seed, axis=0))
    return np.concatenate(parts)


def _row(plan: Any, results: list[dict[str, Any]], i: int, ref: int, metrics: list[str],
         ref_units: np.ndarray | None, spec: Any, ncand: dict[int, Any], table_def: Any,
         kind: str | None) -> dict[str, Any]:
    """One row of the table: its cells over seeds and splits, its paired test against the complete model."""
    from zsexp.selection import paired_units, summarise

    v = plan.variants[i]
    every = [r for r in results if r["variant"] == v.key]
    runs = [r for r in every if not r.get("diverged")]          # a diverged run has no metrics
    cells = {m: summarise([r["metrics"][m] for r in runs]) for m in metrics if all(m in r["metrics"] for r in runs)}
    row_units = _row_units(plan, results, v.key, spec.objective, ncand)
    if i == ref:
        test = None
    elif row_units is None or ref_units is None or row_units.shape != ref_units.shape:
        test = {"test": "wilcoxon", "unit": spec.unit, "n": 0, "p_value": None, "significant": False,
                "note": "not comparable (another task or other units)"}
    else:
        test = paired_units(row_units, ref_units, spec.unit)
    return {"key": v.key, "slug": v.slug, "label": v.label, "overrides": v.overrides, "complete": i == ref,
            "cells": cells, "values": {m: [r["metrics"][m] for r in runs if m in r["metrics"]] for m in metrics},
            "runs": len(every), "diverged": len(every) - len(runs), "vs_complete": test,
            "paper": (v.paper.get(table_def.metrics[0], {}).get(kind) if kind else None)}


def _baseline_row(plan: Any, baseline: dict[int, Any], metrics: list[str], ref_units: np.ndarray | None,
                  spec: Any, ncand: dict[int, Any]) -> dict[str, Any] | None:
    """The task's baseline on the same splits, when it ran on every one (else it is not beside them all)."""
    from zsexp.selection import paired_units, summarise

    base_rows = [b for b in baseline.values() if b is not None]
    if len(base_rows) != len(plan.data_seeds):
        return None
    b_units = np.concatenate([_units(spec.objective, {"per": {k: v for k, v in baseline[d]["test"].items()
                                                               if not isinstance(v, float)}}, ncand[d])
                              for d in plan.data_seeds])
    return {"model": base_rows[0]["model"], "lam": [b["config"]["lam"] for b in base_rows],
            "chosen_by": base_rows[0]["chosen_by"],
            "cells": {m: summarise([b["test"][m] for b in base_rows]) for m in metrics
                      if all(m in b["test"] for b in base_rows)},
            "vs_complete": (paired_units(b_units, ref_units, spec.unit) if ref_units is not None
                            and b_units.shape == ref_units.shape else None)}


def paper_dataset(dataset_name: str, table_def: Any) -> str | None:
    """The paper dataset this data stands for (its name mentions it: ``synthetic-cub`` -> CUB), if the
    paper's table reports one; else None (no paper column)."""
    reported = {k for row in table_def.rows for per in row.paper.values() for k in per}
    low = dataset_name.lower()
    return next((k for k in sorted(reported) if k.lower() in low or (k == "Flowers" and "flo" in low)), None)


# --------------------------------------------------------------------------- output
def _p(test: dict[str, Any] | None) -> str:
    if not test:
        return "-"
    if test.get("p_value") is None:
        return test.get("note", "n/a")
    p = test["p_value"]
    return (f"{p:.3g}" if p >= 1e-16 else "< 1e-16") + (" *" if test["significant"] else "")


def table_lines(t: dict[str, Any]) -> list[str]:
    metrics, obj = t["metrics"], t["objective"]
    splits = len(t["data_seeds"])
    paper = t["paper_dataset"]
    better = "higher" if t["mode"] == "max" else "lower"
    head = ["row", *[f"{m} mean ± sd [95% CI]" for m in metrics], f"Δ {obj} vs complete ({better} is better)",
            "p (Wilcoxon)"]
    if paper:
        head.append(f"paper ({paper})")
    budget = (f"budget {t['budget']} rounds (where the sweep's winner reached its value)" if t["budget"] else
              "full training (the model's own number of rounds and stopping rule)")
    lines = [f"# {t['title']}: {t['model']} on {t['dataset_name']}", "",
             f"Base configuration: {t['base']}; {budget}.  "
             f"Each row: {t['seeds']} seeds x {splits} data split(s) ({', '.join(map(str, t['data_seeds']))}), "
             f"each run fitted on train + val and evaluated once on the unseen test classes.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = next(r for r in t["rows"] if r["complete"])
    for r in t["rows"]:
        cells = [fmt_stats(r["cells"][m]) if m in r["cells"] else "n/a" for m in metrics]
        delta = "-" if r["complete"] or obj not in r["cells"] or obj not in ref["cells"] else \
            f"{r['cells'][obj]['mean'] - ref['cells'][obj]['mean']:+.2f}"
        label = f"**{r['label']}** (complete)" if r["complete"] else r["label"]
        if r["diverged"]:
            label += f" ({r['diverged']} of {r['runs']} runs diverged to NaN)"
        row = [label, *cells, delta, "reference" if r["complete"] else _p(r["vs_complete"])]
        if paper:
            row.append("-" if r["paper"] is None else f"{r['paper']:g}")
        lines.append("| " + " | ".join(row) + " |")
    b = t["baseline"]
    if b:
        lams = ", ".join(f"{x:g}" for x in b["lam"])
        cells = [(fmt_stats(b["cells"][m]) if splits > 1 else f"{b['cells'][m]['mean']:.2f}") if m in b["cells"]
                 else "n/a" for m in metrics]
        delta = f"{b['cells'][obj]['mean'] - ref['cells'][obj]['mean']:+.2f}" \
            if obj in b["cells"] and obj in ref["cells"] else "-"
        row = [f"{b['model']} baseline (lam {lams}, chosen on validation)", *cells, delta, _p(b["vs_complete"])]
        lines.append("| " + " | ".join(row + (["-"] if paper else [])) + " |")
    row = ["chance", *[f"{t['chance'][m]:.2f}" if m in t["chance"] else "n/a" for m in metrics], "-", "-"]
    lines.append("| " + " | ".join(row + (["-"] if paper else [])) + " |")
    n = t["n_units"]
    lines += ["", f"Cells: mean ± sd over the {t['seeds'] * splits} runs of a row with a 95% t-interval.  "
              f"p: Wilcoxon signed-rank test of the row against the complete model on {obj} over the same "
              + (f"{n} test {PLURAL[t['unit']]}" if n else f"test {PLURAL[t['unit']]}")
              + f" ({'every split, ' if splits > 1 else ''}each {t['unit']}'s value averaged over seeds); "
              "* = significant at 0.05.  The baseline is fitted on train + val like the rows and scored on the "
              "same splits; chance is a random ranking of the same candidates."]
    if paper:
        lines += ["", f"Paper column: {t['paper_source']}, the paper's own data.  {t['dataset_name']} shares "
                      f"only its shape, so compare orderings and gaps, not values."]
    lines += ["", "![rows](table.png)"]
    return lines


def plot_table(t: dict[str, Any], path: Path) -> None:
    """The objective of every row (runs as dots, mean with its 95% interval), baseline and chance as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obj = t["objective"]
    rows = [r for r in t["rows"] if obj in r["cells"]]
    fig, ax = plt.subplots(figsize=(8.5, 0.5 * len(rows) + 1.8))
    for i, r in enumerate(rows):
        c = r["cells"][obj]
        ax.scatter(r["values"][obj], [i] * len(r["values"][obj]), color="tab:blue", alpha=0.35, s=14)
        half = 0.0 if math.isnan(c["ci95_high"]) else c["ci95_high"] - c["mean"]
        ax.errorbar(c["mean"], i, xerr=half, fmt="o", color="k" if r["complete"] else "tab:blue", capsize=4)
    if t["baseline"] and obj in t["baseline"]["cells"]:
        ax.axvline(t["baseline"]["cells"][obj]["mean"], ls="--", color="tab:red", label=f"{t['baseline']['model']} "
                   f"(baseline)")
    if obj in t["chance"]:
        ax.axvline(t["chance"][obj], ls=":", color="grey", label="chance")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    if rows:
        ax.set_ylim(len(rows) - 0.5, -0.5)       # the table's order, top to bottom
    else:
        ax.text(0.5, 0.5, f"no run has a finite test {obj}", ha="center", transform=ax.transAxes)
    better = "higher" if t["mode"] == "max" else "lower"
    ax.set_xlabel(f"test {obj} ({better} is better)")
    ax.set_title(f"{t['title']} on {t['dataset_name']}: dots = runs, bar = 95% CI", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))     # beside the rows, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_table(t: dict[str, Any], out: Path) -> dict[str, Path]:
    from zsexp.report import markdown_to_html

    plot_table(t, out / "table.png")
    lines = table_lines(t)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.html").write_text(markdown_to_html(lines, out, title=f"{t['title']}: {t['dataset_name']}"))
    return {"md": out / "table.md", "html": out / "table.html", "png": out / "table.png"}
