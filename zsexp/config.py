"""Typed configs: dataclass fields carry their allowed range or choices; YAML and ``--set`` go through here.

A field declares its constraint with ``param(default, low=..., high=..., choices=..., help=...)``.
:func:`build_config` starts from the dataclass defaults, applies overrides in order, and rejects
unknown keys, wrong types and out-of-range values naming the source, key and allowed values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from zsexp.errors import ZsexpError

T = TypeVar("T")


def param(default: Any, *, low: float | None = None, high: float | None = None,
          choices: Iterable[Any] | None = None, help: str = "") -> Any:
    meta = {"low": low, "high": high, "choices": tuple(choices) if choices is not None else None, "help": help}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe_field(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    lo, hi = m.get("low"), m.get("high")
    if lo is not None or hi is not None:
        return f"in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    return "any value of its type"


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    origin = get_origin(typ)
    if origin is list:
        (inner,) = get_args(typ) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ZsexpError(f"{source}: `{key}` must be a list, got {value!r}")
        return [_coerce(v, inner, key, source) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ZsexpError(f"{source}: `{key}` must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ZsexpError(f"{source}: `{key}` must be an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ZsexpError(f"{source}: `{key}` must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ZsexpError(f"{source}: `{key}` must be finite, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ZsexpError(f"{source}: `{key}` must be a string, got {value!r}")
        return value
    return value


def _check(f: dataclasses.Field, value: Any, key: str, source: str) -> None:
    m = f.metadata
    items = value if isinstance(value, list) else [value]
    for v in items:
        if m.get("choices") and v not in m["choices"]:
            raise ZsexpError(f"{source}: `{key}` must be {describe_field(f)}, got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if m.get("low") is not None and v < m["low"] or m.get("high") is not None and v > m["high"]:
                raise ZsexpError(f"{source}: `{key}` must be {describe_field(f)}, got {v!r}")


def build_config(cls: type[T], *overrides: tuple[str, Mapping[str, Any]]) -> T:
    """``cls`` defaults, then each ``(source, mapping)`` in order; every value validated."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for source, mapping in overrides:
        if mapping is None:
            continue
        if not isinstance(mapping, Mapping):
            raise ZsexpError(f"{source}: expected a mapping of key: value, got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - set(fields))
        if unknown:
            raise ZsexpError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; "
                             f"allowed: {', '.join(sorted(fields))}")
        for key, raw in mapping.items():
            value = _coerce(raw, hints[key], key, source)
            _check(fields[key], value, key, source)
            values[key] = value
    cfg = cls(**values)
    post = getattr(cfg, "check", None)
    if post:
        post()
    return cfg


# What parsing one of the user's YAML texts may cost, whatever its structure (stated in docs/safety.md)
MAX_YAML_BYTES = 1 << 20          # a config or search space is a few hundred bytes
MAX_YAML_NODES = 100_000          # values after anchors and aliases are expanded
MAX_YAML_DEPTH = 32
MAX_SET_ITEMS = 1_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a mapping key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue                          # PyYAML itself refuses an unhashable key, with its mark
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {clip(key)!r} is given twice (first at line {seen[key].line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def clip(value: Any, n: int = 60) -> str:
    """``value`` as text cut to a readable length, for an error message that echoes it."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= n else f"{text[:n - 25]}...({len(text)} characters)"


def _bounded(obj: Any, where: str) -> None:
    """Refuse a parsed document larger than :data:`MAX_YAML_NODES` values (aliases counted every time they
    are used) or deeper than :data:`MAX_YAML_DEPTH`; the walk stops at the bound, so it costs at most that."""
    count, stack = 0, [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_YAML_NODES:
            raise ZsexpError(f"{where}: more than {MAX_YAML_NODES:,} values once its anchors and aliases are expanded; "
                             f"refused")
        if depth > MAX_YAML_DEPTH:
            raise ZsexpError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep; refused")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def parse_yaml(text: str, where: str) -> Any:
    """A YAML text of the user's, bounded (:data:`MAX_YAML_BYTES`, nodes, depth) and unambiguous (no key twice)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise ZsexpError(f"{where}: larger than {MAX_YAML_BYTES // 1024} KiB; refused (a config or space is a few "
                         f"hundred bytes)")
    try:
        data = yaml.load(text, Loader=_StrictLoader)                    # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ZsexpError(f"{where}: malformed YAML{at}: {clip(getattr(exc, 'problem', exc), 200)}") from None
    except RecursionError:
        raise ZsexpError(f"{where}: nested too deeply to parse; refused") from None
    _bounded(data, where)
    return data


def parse_set(items: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """``["alpha=0.5", "g_hidden=[64, 64]"]`` -> dict; values parsed as YAML scalars/lists.  A key given
    twice is refused (which one was meant?)."""
    out: dict[str, Any] = {}
    items = list(items or ())
    if len(items) > MAX_SET_ITEMS:
        raise ZsexpError(f"{source}: {len(items)} values given; at most {MAX_SET_ITEMS} are accepted")
    for item in items:
        if "=" not in item:
            raise ZsexpError(f"{source}: expected key=value, got {clip(item)!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key in out:
            raise ZsexpError(f"{source}: `{clip(key)}` is given twice; give each key once")
        value = parse_yaml(raw, f"{source} {clip(key)}") if raw.strip() else ""
        out[key] = _float_like(value)
    return out


def _float_like(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; users mean a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, list):
        return [_float_like(v) for v in value]
    return value


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ZsexpError(f"config file not found: {path}")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ZsexpError(f"{path}: larger than {MAX_YAML_BYTES // 1024} KiB; refused (a config or space is a "
                             f"few hundred bytes)")
        with open(path, "rb") as f:
            text = f.read(MAX_YAML_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZsexpError(f"{path}: not a readable YAML text file ({type(exc).__name__})") from None
    return _floats_in(parse_yaml(text, str(path)))


def _floats_in(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _floats_in(v) for k, v in obj.items()}
    return _float_like(obj)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flat_params(cfg: Any) -> dict[str, str]:
    """Config (a config object, or its fields as a mapping) as flat string params (MLflow-friendly: lists
    joined by 'x')."""
    out = {}
    for key, value in (cfg if isinstance(cfg, Mapping) else dataclasses.asdict(cfg)).items():
        out[key] = "x".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return out
