"""The papers' ablation tables: the rows in the paper's order, the config overrides that make each, and the
figures the paper reports beside them.  ``zsexp ablate`` runs a table's rows (``variants``) and prints the
paper's figures beside the measured ones (``table``); nothing here is a measured value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AblationRow:
    """One row of a paper's ablation table: its label, the config overrides that make it, and the
    paper's figures (metric -> paper dataset -> value) where the paper reports them."""

    label: str
    overrides: dict[str, Any]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class AblationTable:
    """A paper's ablation table for one model family: the rows in the paper's order, ``rows[complete]``
    being the complete model every other row is compared with; the metrics the table reports; the keys
    whose values are also offered as named variants (``zsexp ablate --variants``)."""

    title: str
    rows: tuple[AblationRow, ...]
    metrics: tuple[str, ...]
    variant_keys: tuple[str, ...]
    source: str = ""        # where the paper's figures come from (table, datasets)
    complete: int = 0       # index of the complete model's row

    @property
    def reference(self) -> AblationRow:
        return self.rows[self.complete]


def _mfr(zsl: float, gzsl: float) -> dict[str, dict[str, float]]:
    return {"zsl/mfr": {"ImageNet": zsl}, "gzsl/mfr": {"ImageNet": gzsl}}


# Table 5 (§4.5): MFR on ImageNet, column "All" of ZSL and G-ZSL, rows in the paper's order; the
# complete model (CM-GAN, the last row) is the one every other row is compared with
TABLE5 = AblationTable(
    title="CM-GAN Table 5 (ablation study)",
    rows=(AblationRow("Init. CONSE", {"ablation": "conse"}, _mfr(15.35, 15.65)),
          AblationRow("cycle L_c", {"ablation": "cycle"}, _mfr(13.87, 14.3)),
          AblationRow("gan L_gan", {"ablation": "gan"}, _mfr(14.25, 13.68)),
          AblationRow("cgan L_gan + λc L_c", {"ablation": "cgan"}, _mfr(13.34, 13.32)),
          AblationRow("sup L_sup", {"ablation": "sup"}, _mfr(11.07, 11.13)),
          AblationRow("CM-GAN", {"ablation": "full"}, _mfr(9.98, 9.97))),
    complete=5,
    metrics=("zsl/mfr", "gzsl/mfr", "zsl/fh@5"),
    variant_keys=("ablation", "mode"),          # mode=sentence: §4.7 sentence matching
    source="Table 5: MFR (%) on ImageNet, column All (2-hop and 3-hop not reproduced)")



def _p50(cub: float, flowers: float) -> dict[str, dict[str, float]]:
    return {"precision@50": {"CUB": cub, "Flowers": flowers}}


# Table 8 (§4.7): Prec@50 on CUB and Flowers, rows in the paper's order, the complete model first
TABLE8 = AblationTable(
    title="ZSCRGAN Table 8 (ablation analysis)",
    rows=(AblationRow("Complete model", {"ablation": "none"}, _p50(51.7, 57.6)),
          AblationRow("w/o wrong class embedding", {"ablation": "no_wrong"}, _p50(24.7, 27.2)),
          AblationRow("w/o R and triplet loss", {"ablation": "no_r_triplet"}, _p50(23.8, 33.7)),
          AblationRow("w/o triplet loss", {"ablation": "no_triplet"}, _p50(36.2, 41.4)),
          AblationRow("w/o R", {"ablation": "no_r"}, _p50(48.4, 35.2)),
          AblationRow("w/o GAN", {"ablation": "no_gan"}, _p50(25.9, 32.0))),
    metrics=("precision@50", "map@50", "top1"),
    # E-M vs joint training (Fig. 2) and the wrong-class strategies (Fig. 3) are named variants
    variant_keys=("ablation", "training", "wrong_class"),
    source="Table 8: Prec@50 (%) on CUB and Flowers")


TABLES: dict[str, AblationTable] = {"zscrgan": TABLE8, "cmgan": TABLE5}


def table_of(family: str) -> AblationTable | None:
    """The paper's ablation table of a model family, or None where its paper has none (the baselines)."""
    return TABLES.get(family)
