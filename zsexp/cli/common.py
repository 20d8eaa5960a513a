"""What every command shares: the parser that refuses in one line, the one-line error, the crash report."""

from __future__ import annotations

import argparse
import os
import re
import signal
from pathlib import Path
from typing import Any

from zsexp.options import add_options

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
MAX_TOKEN, MAX_LINE = 240, 800         # an error line stays readable whatever value it echoes


def one_line(message: str) -> str:
    """A message as one plain line: ANSI codes and other control characters removed, line breaks and runs
    of spaces folded, and cut to a readable length: a word (a value, a path) longer than
    :data:`MAX_TOKEN` characters keeps its start and end (a path its file name), a line longer than
    :data:`MAX_LINE` its start and end."""
    from zsexp.workcopy import as_uris

    words = []
    for w in _ANSI.sub("", as_uris(message)).split():
        w = "".join(ch if ch.isprintable() else "?" for ch in w)
        words.append(w if len(w) <= MAX_TOKEN else f"{w[:100]}...({len(w)} characters)...{w[-60:]}")
    line = " ".join(words)
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE - 160]} ... {line[-140:]}"


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), pointing at ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{one_line(f'{self.prog}: error: {message}')} (see `{self.prog} --help`)\n")


def command(sub: Any, name: str, run: Any, *options: type, help: str, description: str,
            stops_on_sigterm: bool = False, **parser_kw: Any) -> argparse.ArgumentParser:
    """A subcommand whose options are the fields of the ``options`` dataclasses, run by ``run(args)``.
    ``stops_on_sigterm``: a long job that SIGTERM (what a cluster scheduler sends) stops as Ctrl-C does."""
    p = sub.add_parser(name, help=help, description=description, **parser_kw)
    add_options(p, *options)
    p.set_defaults(func=run, stops_on_sigterm=stops_on_sigterm)
    return p


def error_log(exc: BaseException) -> Path | None:
    """The full report of an unexpected error, in a per-user temp folder (never in the sweep storage)."""
    import datetime as dt
    import tempfile
    import traceback

    try:
        folder = Path(tempfile.gettempdir()) / f"zsexp-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        path = folder / f"error-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)))
        return path
    except OSError:
        return None


def sigterm_as_interrupt(signum, frame) -> None:
    """SIGTERM stops a job as Ctrl-C does: Tune's own SIGINT handling saves its state and the command
    ends resumable."""
    os.kill(os.getpid(), signal.SIGINT)
