"""``zsexp ui SWEEP --dashboard``: Optuna's own dashboard (optuna-dashboard) on a sweep's study.

The study is the sweep's Optuna journal, opened **read-only**: the dashboard's write features (notes,
a human's tell) are refused, since only the sweep's driver, under its lock, writes a sweep.  A sweep on a
file system is shown live; one in an object store as it was when the command copied it.  The objectives
carry the metrics' names (``study.set_metric_names``, made at the sweep's start), and each trial its
parameters and the user attributes ``mlflow_run_id``, ``outcome`` and ``compute_*``.  The server listens
on loopback unless ``--host`` says otherwise.  optuna-dashboard is an optional dependency:
``pip install 'zsexp[dashboard]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zsexp.errors import ZsexpError


def read_only_journal(sweep_dir: str | Path) -> Any:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    from zsexp.search.optuna_search import JOURNAL_FILE

    path = Path(sweep_dir) / JOURNAL_FILE
    if not path.is_file():
        raise ZsexpError(f"{path}: the sweep has no Optuna journal yet (it has not started a trial)")

    class ReadOnly(JournalFileBackend):
        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            raise RuntimeError("read-only: a sweep's study is written by its driver only")

    return optuna.storages.JournalStorage(ReadOnly(str(path)))


def serve(meta: Any, host: str, port: int) -> int:
    try:
        import optuna_dashboard
    except ImportError:
        raise ZsexpError("--dashboard needs optuna-dashboard, an optional dependency: pip install "
                         "'zsexp[dashboard]' (or pip install optuna-dashboard)") from None
    from zsexp.tracking import check_port_free
    from zsexp.workcopy import describe

    storage = read_only_journal(meta.dir)
    try:
        study_id = storage.get_study_id_from_name(meta.name)
    except KeyError:
        raise ZsexpError(f"{describe(meta.dir)}: its Optuna journal holds no study {meta.name!r}") from None
    check_port_free(host, port)
    print(f"[{meta.name}] Optuna dashboard on http://{host}:{port}/dashboard/studies/{study_id} (study "
          f"{meta.name!r}, read-only); Ctrl-C stops it", flush=True)
    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except KeyboardInterrupt:
        pass
    return 0
