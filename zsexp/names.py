"""Names that become paths, MLflow filter values or registry entries: one rule, checked once.

A sweep name is a directory under the sweeps root and a value in MLflow filter strings; a
registered model name and an alias are values in registry filters.  None of them may carry a path
separator, a quote or a leading dot, so that no name can leave the sweeps root or break a filter.
"""

from __future__ import annotations

import re

from zsexp.errors import ZsexpError

MAX_NAME = 100
# the model families the CLI offers, named here so that building its parser imports no torch;
# zsexp.models.MODELS holds one spec for each (checked by the tests)
MODEL_NAMES = ("zscrgan", "cmgan", "ridge", "ridge-zsl")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# MLflow keeps these for itself: `latest` and version-like aliases (`v1`, `V12`)
_RESERVED_ALIAS = re.compile(r"(latest|[vV]\d+)")


def metric_key(name: str) -> str:
    """A validation metric's name as Tune reports it and MLflow stores it (MLflow forbids '@'); a compute
    metric (``compute_wall_s``, ...: what the trial spent, zsexp.search.compute) is its own key."""
    if name.startswith("compute_"):
        return name
    return "val_" + name.replace("@", "_at_").replace("/", "_")


def check_name(name: str | None, what: str = "sweep name") -> str:
    """``name`` if it is a safe name: 1-100 characters of letters, digits, '.', '_' and '-', starting
    with a letter or digit (so no path separator, no leading dot, no quote); else a ZsexpError."""
    if name is None or name == "":
        raise ZsexpError(f"{what} must not be empty")
    if len(name) > MAX_NAME:
        raise ZsexpError(f"{what} is {len(name)} characters long; at most {MAX_NAME} are allowed")
    if not _NAME.fullmatch(name):
        raise ZsexpError(f"{what} {name!r} is not allowed: use letters, digits, '.', '_' and '-', starting with a "
                         f"letter or digit (no path separators, quotes or spaces)")
    return name


def check_alias(alias: str) -> str:
    """A registry alias: letters, digits, '_' and '-' (not MLflow's reserved ``latest`` / ``vN``)."""
    if not alias or len(alias) > MAX_NAME or not _ALIAS.fullmatch(alias):
        raise ZsexpError(f"alias {alias!r} is not allowed: use 1-{MAX_NAME} letters, digits, '_' and '-', starting "
                         f"with a letter or '_'")
    if _RESERVED_ALIAS.fullmatch(alias):
        raise ZsexpError(f"alias {alias!r} is reserved by the MLflow registry (`latest` and `vN` name versions); "
                         f"choose another, e.g. champion")
    return alias


def filter_value(value: str) -> str:
    """``value`` quoted for an MLflow search filter.  Values are checked names or run ids, so they hold
    no quote; anything else is refused rather than pasted into the filter."""
    if not isinstance(value, str) or "'" in value or "`" in value or "\\" in value or "\n" in value:
        raise ZsexpError(f"{value!r} cannot be used in an MLflow search filter")
    return f"'{value}'"
