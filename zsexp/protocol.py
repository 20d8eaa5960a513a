"""The final selection's protocol in words and constants, shared by the job, its report and the registry."""

from __future__ import annotations

PHASES = {"val": "train", "test": "trainval"}          # phase -> classes the model is fitted on
PLURAL = {"query": "queries", "image": "images"}
SEED_RULE = "the seed whose validation objective is nearest the winner's mean over seeds (ties: lower seed)"
PROTOCOL = ("Candidates are ranked and the winner chosen by their mean validation objective over seeds "
            "(models fitted on the train classes); test figures come from separate models fitted on train + val "
            "and are measured once, for this report, never to choose.")


def fmt_stats(s: dict[str, float]) -> str:
    """``mean ± sd [95% CI]`` of a summary over seeds."""
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}]"
