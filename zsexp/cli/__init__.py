"""The ``zsexp`` command: a dispatcher over one module per command.

Each module of this package declares its command (``register``: the parser, built from the options
dataclass whose fields carry every flag, help, default and bound, ``zsexp.options``) and runs it by
calling one library function.  Errors are one line on stderr and exit code 2 (bad input) -- never a
bare traceback; an unexpected error leaves its full report in a per-user temp file.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from zsexp.cli import ablate, data, evaluate, promote, resume, search, select, status, train, ui
from zsexp.cli.common import OneLineParser, error_log, one_line, sigterm_as_interrupt
from zsexp.errors import ZsexpError

COMMANDS = (data, train, search, resume, status, ui, select, ablate, promote, evaluate)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="zsexp",
        description="Hyperparameter search and experiment tracking for zero-shot cross-modal GANs "
                    "(CM-GAN, ZSCRGAN).  State lives under $ZSEXP_HOME (default ~/.zsexp).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`zsexp train zscrgan --help | head`): stop quietly, as other command-line
        # tools do; the remaining output goes nowhere instead of raising again at interpreter exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141          # 128 + SIGPIPE, the shell's status for a command its reader closed


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "stops_on_sigterm", False):
        signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        from zsexp.env import check_environment

        check_environment()              # before any directory, study, run or Ray process exists
        return int(args.func(args) or 0)
    except ZsexpError as exc:
        print(f"zsexp: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zsexp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure: one line, the details in a file
        log = error_log(exc)
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
        where = f" (full report: {log})" if log else ""
        print(f"zsexp: error: {type(exc).__name__}: {one_line(first)[:300]}{where}", file=sys.stderr)
        return 2
