"""The rows of an ablation: the paper's table of a model family, or variants named on the command line.

A variant is a set of config overrides applied last, on top of the base configuration (the dataset's
defaults, or a sweep's winner).  Names: ``table`` (every row of the paper's table), a value of the
family's ``ablation`` key (``no_gan``), or ``KEY=VALUE`` of any config key (``training=joint``,
``wrong_class=kmeans``, ``mode=sentence``).  The complete model (the table's reference row) is always
a row: every other row is compared with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from zsexp.errors import ZsexpError

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,60}")


@dataclass(frozen=True)
class Variant:
    key: str                          # canonical name: "ablation=no_gan", "training=joint"
    label: str                        # the paper's row label, or the key
    overrides: dict[str, Any]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def slug(self) -> str:
        """The variant in file names: its key with '=' as '-', when that is a safe name, else a digest."""
        s = self.key.replace("=", "-")
        if _SLUG.fullmatch(s):
            return s
        return "v-" + hashlib.sha256(self.key.encode()).hexdigest()[:12]


def _key(overrides: dict[str, Any]) -> str:
    return ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(overrides.items()))


def _table(family: str):
    from zsexp.ablation.paper import TABLES, table_of
    from zsexp.models import get_spec

    get_spec(family)
    table = table_of(family)
    if table is None:
        with_table = ", ".join(TABLES)
        raise ZsexpError(f"model {family!r} has no ablation table; `zsexp ablate` takes {with_table}")
    return table


def named_variants(family: str) -> list[str]:
    """The names ``--variants`` offers for ``family`` (besides ``table`` and any ``KEY=VALUE``)."""
    import dataclasses

    from zsexp.models import get_spec

    table = _table(family)
    ref = table.reference.overrides
    fields = {f.name: f for f in dataclasses.fields(get_spec(family).config_cls)}
    out = []
    for key in table.variant_keys:
        for choice in fields[key].metadata.get("choices", ()):
            if ref.get(key) == choice or fields[key].default == choice:
                continue
            out.append(choice if key == "ablation" else f"{key}={choice}")
    return out


def resolve_variants(family: str, spec_text: str) -> list[Variant]:
    """The rows ``spec_text`` names, the complete model among them (first unless the paper's table puts
    it elsewhere); duplicates once.  A name that is neither ``table``, an ablation value nor ``KEY=VALUE``
    is one error listing the names."""
    from zsexp.config import parse_set

    table = _table(family)
    by_overrides = {_key(r.overrides): r for r in table.rows}
    tokens = [t.strip() for t in (spec_text or "table").split(",")]
    if not all(tokens):
        raise ZsexpError(f"--variants {spec_text!r}: an empty name; give comma-separated names")
    picked: list[Variant] = []

    def add(overrides: dict[str, Any], label: str | None = None) -> None:
        key = _key(overrides)
        row = by_overrides.get(key)
        v = Variant(key=key, label=label or (row.label if row else key), overrides=dict(overrides),
                    paper=row.paper if row else {})
        if all(p.key != v.key for p in picked):
            picked.append(v)

    if "table" not in tokens:
        add(table.reference.overrides)
    choices = named_variants(family)
    for tok in tokens:
        if tok == "table":
            for row in table.rows:
                add(row.overrides, row.label)
        elif "=" in tok:
            add(parse_set([tok], source=f"--variants {tok!r}"))
        elif tok in choices:
            add({"ablation": tok})
        else:
            raise ZsexpError(f"--variants: unknown variant {tok!r} of {family}; use `table`, one of "
                             f"{', '.join(choices)}, or KEY=VALUE of a config key (`zsexp train {family} --help`)")
    return picked


def reference_index(family: str, variants: list[Variant]) -> int:
    """Where the complete model is among ``variants``."""
    ref = _key(_table(family).reference.overrides)
    return next(i for i, v in enumerate(variants) if v.key == ref)


def describe_variants(family: str) -> str:
    """``zsexp ablate MODEL --list-variants``: the paper's rows and the named variants."""
    table = _table(family)
    lines = [f"{table.title} (--variants table, the default):"]
    for row in table.rows:
        over = ", ".join(f"{k}={v}" for k, v in row.overrides.items())
        lines.append(f"  {row.label:<32} {over}" + ("   (complete model)" if row is table.reference else ""))
    lines += ["named variants (--variants NAME,NAME,...; the complete model is always a row):",
              "  " + ", ".join(named_variants(family)),
              f"  or KEY=VALUE of any config key (`zsexp train {family} --help` lists them)"]
    return "\n".join(lines)
