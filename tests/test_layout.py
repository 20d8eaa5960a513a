"""The package holds to its map (docs/design/architecture.md): sizes, layers, and every command-line option
declared once."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "zsexp"
SOURCES = sorted(PKG.rglob("*.py"))
MAX_FUNCTION, MAX_MODULE = 60, 400


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_sizes(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE, f"{path}: more than {MAX_MODULE} lines; split it by concern"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_FUNCTION, f"{path}:{node.lineno} {node.name} is {n} lines (at most {MAX_FUNCTION})"


def _zsexp_imports(path: Path) -> set[str]:
    """Every zsexp module ``path`` imports, at module level or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zsexp"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("zsexp"))
    return out


# module -> the zsexp packages it must not import (a lower layer never reaches up)
LAYERS = {
    "errors.py": ("zsexp.",), "options.py": ("zsexp.search", "zsexp.models", "zsexp.cli", "zsexp.tracking"),
    "names.py": ("zsexp.search", "zsexp.models", "zsexp.cli"), "tags.py": ("zsexp.",),
    "meta.py": ("zsexp.search", "zsexp.models", "zsexp.cli", "zsexp.tracking"),
    "ui_links.py": ("zsexp.search", "zsexp.cli"),
    "compat/ray_tune.py": ("zsexp.",), "compat/optuna.py": ("zsexp.",),
    # the object-store layer sits below everything that keeps state
    "objectstore.py": ("zsexp.search", "zsexp.models", "zsexp.cli", "zsexp.tracking", "zsexp.data", "zsexp.workcopy"),
    "workcopy.py": ("zsexp.search", "zsexp.models", "zsexp.cli", "zsexp.tracking", "zsexp.data"),
}


@pytest.mark.parametrize("rel", sorted(LAYERS))
def test_lower_layers_do_not_import_upward(rel):
    imports = _zsexp_imports(PKG / rel)
    bad = sorted(m for m in imports for banned in LAYERS[rel] if m.startswith(banned))
    assert not bad, f"zsexp/{rel} imports {bad}"


def test_models_know_nothing_of_ray_or_mlflow():
    for path in (PKG / "models").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        bad = sorted(m for m in names if m.split(".")[0] in ("ray", "mlflow", "optuna")
                     or m.startswith(("zsexp.search", "zsexp.tracking", "zsexp.ablation", "zsexp.cli")))
        assert not bad, f"{path} imports {bad}"


def _subparsers(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:          # argparse has no public walk over its subcommands
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _subparsers(sub, f"{prefix}{name} ")


def test_every_option_has_one_help():
    """Every option of every command is described (in --help); an option several commands share has the same
    text everywhere, because it is declared once (``zsexp.options``)."""
    from zsexp.cli import build_parser

    seen: dict[str, set[str]] = {}
    for name, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or not action.option_strings:
                continue
            assert action.help, f"zsexp {name} {action.option_strings[0]} has no help"
            seen.setdefault(action.option_strings[0], set()).add(action.help)
    for flag in ("--storage", "--trust-storage", "--address", "--device", "--json"):
        texts = {t.replace("ablations", "sweeps") for t in seen[flag]}    # one text, two kinds of job
        assert len(texts) == 1, f"{flag} is described {len(texts)} ways: {texts}"


def test_options_dataclasses_build_the_parsers():
    """The library's options dataclasses are what the parser is built from: a parsed command fills them."""
    from zsexp.ablation.options import AblateOptions
    from zsexp.cli import build_parser
    from zsexp.options import from_args
    from zsexp.protocol import SelectOptions
    from zsexp.search.options import SweepOptions

    p = build_parser()
    o = from_args(SweepOptions, p.parse_args(["search", "zscrgan", "--trials", "3", "--set", "alpha=1",
                                              "--set", "beta=2", "--progress-every", "0"]))
    assert (o.model, o.trials, o.sets, o.progress_every_s, o.cpus_per_trial) == ("zscrgan", 3,
                                                                                   ("alpha=1", "beta=2"), 0.0, 1.0)
    s = from_args(SelectOptions, p.parse_args(["select", "sw", "--k", "2", "--trust-storage"]))
    assert (s.sweep, s.k, s.seeds, s.trust_storage) == ("sw", 2, 5, True)
    a = from_args(AblateOptions, p.parse_args(["ablate", "cmgan", "--from", "sw", "--data-seeds", "1", "2"]))
    assert (a.model, a.source, a.data_seeds, a.variants) == ("cmgan", "sw", (1, 2), "table")
