"""``zsexp ui``: the MLflow UI on zsexp's tracking store; with a sweep, links to its trials side by side."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from zsexp import options as opt
from zsexp.cli.common import command
from zsexp.options import option


@dataclass
class UiOptions:
    sweep: str | None = option(optional_positional=True, help="a sweep whose trials the printed links open")
    storage: str | None = opt.storage()
    tracking_uri: str | None = opt.tracking_uri(", or the sweep's")
    host: str = option("127.0.0.1", help="address the UI listens on (default %(default)s)")
    port: int | None = option(kind=int, help="port the UI listens on (default 5000, 8080 with --dashboard)")
    dashboard: bool = option(switch=True, help="open Optuna's dashboard on SWEEP's study instead of the MLflow UI "
                                               "(read-only; needs pip install 'zsexp[dashboard]')")


def register(sub) -> None:
    command(sub, "ui", run, UiOptions, help="open the MLflow UI on zsexp's tracking store",
            description="Start `mlflow ui` on zsexp's store (SQLite under $ZSEXP_HOME by default).  With SWEEP, "
                        "first print a link that opens that sweep's trials (objective and searched parameters as "
                        "columns, best first) and one to their compare view.  With --dashboard, Optuna's "
                        "dashboard on SWEEP's study instead (objectives named, trials' MLflow runs and "
                        "compute as attributes).")


def run(args: argparse.Namespace) -> int:
    from zsexp.tracking import start_ui

    if args.dashboard:
        from zsexp.dashboard import serve
        from zsexp.errors import ZsexpError
        from zsexp.search.storage import read_meta

        if not args.sweep:
            raise ZsexpError("--dashboard shows one sweep's study: give SWEEP")
        return serve(read_meta(args.sweep, args.storage), args.host, args.port or 8080)
    args.port = args.port or 5000
    links = None
    if args.sweep:
        from zsexp.search.space import parse_space
        from zsexp.search.status import show_links
        from zsexp.search.storage import read_meta

        meta = read_meta(args.sweep, args.storage)
        space = parse_space(meta.space, meta.space_source, meta.model)
        args.tracking_uri = args.tracking_uri or meta.tracking_uri

        def links(ui: str) -> None:
            show_links(meta, space, ui)
    return start_ui(args.tracking_uri, args.host, args.port, links)
