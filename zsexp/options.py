"""Command options declared once: a dataclass field carries its flag, help, default and bounds.

An options dataclass (``SweepOptions``, ``SelectOptions``, ``AblateOptions``, and the small ones of the
commands that have no library options) is the one place an option is written.  ``zsexp.cli`` builds
each command's parser from it (:func:`add_options`) and the parsed values back into it
(:func:`from_args`), as ``zsexp.config.param`` does for the models' config keys.  A help text may name
its default as ``%(default)s``, so the default is written once, in the field.

The options every command shares (``--storage``, ``--trust-storage``, ``--address``,
``--tracking-uri``, ``--device``, ...) are the functions at the end of this module: each call makes a
fresh field with the one help text.

This module imports nothing heavy: building the parser (``zsexp --help``) must stay instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Iterable
from typing import Any

CLI = "cli"                     # the field metadata key
MAX_SEED = 2**32 - 1            # numpy's and torch's seed range


def bounded(kind: type, lo: float, hi: float):
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


def option(default: Any = None, *, help: str, flag: str | None = None, kind: type | None = None,
           low: float | None = None, high: float | None = None, choices: Iterable[Any] | None = None,
           metavar: str | None = None, positional: bool = False, optional_positional: bool = False,
           switch: bool = False, repeat: bool = False, many: bool = False) -> Any:
    """A dataclass field that is also a command-line option.

    ``flag`` defaults to ``--field-name``; ``kind`` with ``low``/``high`` checks a number in the parser
    (:func:`bounded`, the upper bound may be a callable evaluated when the parser is built); ``switch``
    is a ``store_true`` flag; ``repeat`` a flag given several times (a tuple); ``many`` one flag taking
    several values (a tuple); ``positional`` (``optional_positional``: may be left out) an argument
    without a flag."""
    meta = {CLI: {"help": help, "flag": flag, "kind": kind, "low": low, "high": high,
                  "choices": tuple(choices) if choices is not None else None, "metavar": metavar,
                  "positional": positional or optional_positional, "optional": optional_positional,
                  "switch": switch, "repeat": repeat, "many": many}}
    if switch:
        default = False
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=meta)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if CLI in f.metadata]


def _argparse_kwargs(f: dataclasses.Field) -> dict[str, Any]:
    m = f.metadata[CLI]
    default = None if f.default is dataclasses.MISSING else f.default
    kw: dict[str, Any] = {"help": m["help"]}
    if m["switch"]:
        kw["action"] = "store_true"
        return kw
    kind = m["kind"]
    if kind is not None and (m["low"] is not None or m["high"] is not None):
        high = m["high"]() if callable(m["high"]) else m["high"]
        kind = bounded(kind, -math.inf if m["low"] is None else m["low"], math.inf if high is None else high)
    if kind is not None:
        kw["type"] = kind
    if m["choices"] is not None:
        kw["choices"] = list(m["choices"])
    if m["metavar"]:
        kw["metavar"] = m["metavar"]
    if m["repeat"]:
        kw.update(action="append", default=list(default or ()))
    elif m["many"]:
        kw.update(nargs="+", default=default)
    elif m["optional"]:
        kw.update(nargs="?", default=default)
    elif not m["positional"]:
        kw["default"] = default
    return kw


def add_options(parser: argparse.ArgumentParser, *classes: type) -> None:
    """Declare every option field of ``classes`` (in field order) on ``parser``."""
    for cls in classes:
        for f in cli_fields(cls):
            m = f.metadata[CLI]
            kw = _argparse_kwargs(f)
            if m["positional"]:
                parser.add_argument(f.name, **kw)
            else:
                parser.add_argument(m["flag"] or "--" + f.name.replace("_", "-"), dest=f.name, **kw)


def from_args(cls: type, args: argparse.Namespace) -> Any:
    """``cls`` filled from the parsed ``args`` (repeated and many-valued options as tuples)."""
    values = {}
    for f in cli_fields(cls):
        if not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        m = f.metadata[CLI]
        values[f.name] = tuple(v) if (m["repeat"] or m["many"]) and v is not None else v
    return cls(**values)


# --------------------------------------------------------------------------- options several commands share
SEED = {"kind": int, "low": 0, "high": MAX_SEED}
GPUS = {"kind": float, "low": 0, "high": 100_000}
GPU_SHARE = {"kind": float, "low": 0, "high": 1_000}
CPUS = {"kind": float, "low": 0, "high": 10_000}
CONCURRENT = {"kind": int, "low": -1, "high": 100_000}
COUNT = {"kind": int, "low": 0, "high": 1_000_000}
SECONDS = {"kind": float, "low": 0, "high": 604_800}
THREADS = {"kind": int, "low": 1, "high": lambda: max(1, os.cpu_count() or 1)}


def storage(what: str = "sweeps") -> Any:
    return option(help=f"where the {what} live: a file system path (on a cluster, one every Ray node mounts) or "
                       f"an object store, s3://BUCKET/PREFIX (endpoint and keys from the AWS variables) "
                       f"(default $ZSEXP_STATE_URI/{what} when set, else $ZSEXP_HOME/{what})")


def trust_storage() -> Any:
    return option(switch=True, help="accept Tune state files this user's zsexp did not sign (a sweep moved between "
                                    "users or machines, or made before signatures): check them first, they are "
                                    "then signed as yours")


def address() -> Any:
    return option(help="Ray cluster address to join (default: start a local Ray)")


def tracking_uri(extra: str = "") -> Any:
    return option(help=f"MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite in $ZSEXP_HOME{extra})")


def device() -> Any:
    return option("auto", help="auto | cpu | cuda[:N] (default %(default)s)")


def dataset(default: Any = "synthetic-tiny", shown: str | None = None) -> Any:
    return option(default, help="built-in name, xlsa17 directory, UCI digits directory or .npz file "
                                f"(default {shown or default})")


def json_output() -> Any:
    return option(switch=True, help="machine-readable output")


def sets(what: str = "fix a config key for all trials") -> Any:
    return option((), repeat=True, flag="--set", metavar="KEY=VALUE", help=f"{what} (repeatable)")


def model(extra: str = "") -> Any:
    from zsexp.names import MODEL_NAMES

    return option(dataclasses.MISSING, positional=True, choices=MODEL_NAMES, help=f"the model family{extra}")
