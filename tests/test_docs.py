"""README.md is a one-page landing: short, readable lines, every command a row, every link resolving."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_one_page():
    lines = README.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference and results to docs/"
    long = [i + 1 for i, line in enumerate(lines) if len(line) > 120 and not line.startswith("|")
            and "](" not in line]
    assert not long, f"README.md lines over 120 characters (not a table or a link): {long}"


def test_every_command_has_a_row():
    from zsexp.cli import COMMANDS

    rows = re.findall(r"^\| `zsexp (\w+)", README, flags=re.M)
    for module in COMMANDS:
        assert module.__name__.rsplit(".", 1)[1] in rows, f"README's commands table lacks {module.__name__}"


def test_links_resolve():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_test_command_is_the_readmes():
    """CI runs `make test`, the README's command."""
    assert "make test" in README and "make test" in (ROOT / ".ci" / "run").read_text()
