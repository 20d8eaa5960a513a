"""The MLflow comparison a user actually sees, in a real headless Chromium.

A 3-trial sweep, a selection and a promotion on the real stores; ``zsexp ui SWEEP`` as a real
server; Selenium drives Debian's ``chromium`` through its ``chromedriver`` (both installed by
``make test`` when missing; nothing is downloaded here).  Screenshots go to the test's temporary
directory and their paths are in every failure message."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for
from zsexp.cli import main
from zsexp.search.storage import read_meta
from zsexp.tracking import client

pytestmark = pytest.mark.slow


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


CHROMEDRIVER = shutil.which("chromedriver")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _shooter(driver, tmp_path: Path, shots: list[str]):
    """``shot(name)``: a screenshot of the page into the test's folder, its path kept in ``shots``."""
    def shot(name: str) -> None:
        path = str(tmp_path / f"{name}.png")
        driver.save_screenshot(path)
        shots.append(path)
    return shot


def _page_has(driver, *texts: str):
    """A check for :func:`_wait`: the page's text holds every one of ``texts``."""
    return lambda: all(t in driver.find_element("tag name", "body").text for t in texts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout: float, what: str, shots: list[str], shoot=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    if shoot is not None:
        shoot("failed-" + what.split()[0])
    raise AssertionError(f"timed out waiting for {what}; screenshots (the last is the failure): {shots}")


def test_ui_links_open_the_sweep_trials_compare_view_and_registry(ray_cluster, tmp_path, capsys, mlflow_ui_up):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromedriver are needed: `make test` installs Debian's chromium and "
                    "chromium-driver packages when they are missing")
    assert main(["search", "zscrgan", "--trials", "3", "--name", "web", "--scheduler", "none",
                 "--set", "em_iterations=3", "--set", "updates_per_step=10", "--progress-every", "0"]) == 0
    out = capsys.readouterr().out
    assert "trials:  http" in out and "compare: http" in out          # the sweep ends with the links
    assert main(["select", "web", "--k", "1", "--seeds", "1", "--register-as", "webmodel"]) == 0
    assert main(["promote", "webmodel"]) == 0
    assert main(["ablate", "zscrgan", "--from", "web", "--variants", "no_gan", "--seeds", "1", "--name", "webabl"]) == 0
    ablate_url = next(w for w in capsys.readouterr().out.split() if "/runs/" in w)     # the printed run link
    meta = read_meta("web", None)
    c = client()
    trials = c.search_runs([meta.experiment_id], filter_string="tags.`zsexp.sweep` = 'web' and "
                                                                  "tags.`zsexp.kind` = 'trial'")
    assert len(trials) == 3
    parent = c.get_run(meta.parent_run_id)
    assert parent.data.metrics["trials_completed"] == 3 and "best_val_precision_at_50" in parent.data.metrics
    assert c.get_experiment(meta.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    best = max(trials, key=lambda r: r.data.metrics["best_val_precision_at_50"])
    best_txt = format(best.data.metrics["best_val_precision_at_50"], "g")[:4]       # as the table shows it

    port = _free_port()
    log = tmp_path / "ui.log"
    ui = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "ui", "web", "--port", str(port)],
                          stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    shots: list[str] = []
    driver = None
    try:
        _wait(lambda: mlflow_ui_up(port), 120, "the MLflow UI", shots)
        lines = log.read_text().splitlines()
        runs_url = next(ln.split()[1] for ln in lines if ln.strip().startswith("trials:"))
        compare_url = next(ln.split()[1] for ln in lines if ln.strip().startswith("compare:"))
        driver = _browser()
        shot = _shooter(driver, tmp_path, shots)
        page_has = functools.partial(_page_has, driver)

        # 1. the printed link: this sweep's trials, objective and searched parameters as columns
        driver.get(runs_url)
        _wait(page_has(*(r.data.tags["zsexp.trial_id"] for r in trials), "best_val_precision_at_50", "alpha",
                       best_txt, "3 matching runs"), 90, "every trial run and the objective on the runs page", shots,
              shot)
        shot("1-trials")
        assert all(r.info.run_name.startswith(r.data.tags["zsexp.trial_id"] + " alpha=") for r in trials)
        body = driver.find_element("tag name", "body").text
        assert "web-selection" not in body and "\nweb\n" not in body      # only the trials, not other runs
        # 2. the compare link: the parallel-coordinates plot over the searched parameters renders
        driver.get(compare_url)
        _wait(lambda: driver.find_elements("css selector", ".parcoords"), 90, "the parallel-coordinates plot",
              shots, shot)
        _wait(page_has("Parallel Coordinates Plot", "val_precision_at_50"), 30, "the plot's axes", shots, shot)
        shot("2-compare")
        # 3. the registered model shows its @champion alias
        driver.get(f"http://127.0.0.1:{port}/#/models/webmodel")
        _wait(page_has("champion"), 90, "the @champion alias on the registered model", shots, shot)
        shot("3-model")
        # 4. the experiment link opens on runs (model training), not on the GenAI overview
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{meta.experiment_id}?workflowType=machine_learning")
        _wait(lambda: "/runs" in driver.current_url, 60, "the experiment to open on its runs", shots, shot)
        shot("4-experiment")
        # 5. the ablation's printed link opens its run: its nested runs and per-row means
        driver.get(ablate_url.replace("127.0.0.1:5000", f"127.0.0.1:{port}"))
        _wait(page_has("webabl-ablation-no_gan.s0.d0", "webabl-ablation-none.s0.d0",
                       "ablation-no_gan_test_precision_at_50_mean"), 90, "the ablation run, its nested runs and means",
              shots, shot)
        shot("5-ablation")
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    assert all(Path(s).stat().st_size > 10_000 for s in shots), shots


def test_ui_serves_zsexp_store(tmp_path, mlflow_ui_up):
    """`zsexp ui` starts a real MLflow UI on zsexp's SQLite store; it answers /health, then stops."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: mlflow_ui_up(port), 120, "the MLflow UI")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)



def test_dashboard_shows_the_study_with_named_objectives(ray_cluster, tmp_path, capsys):
    """`zsexp ui SWEEP --dashboard`: optuna-dashboard on a two-objective sweep's study, read in Chromium:
    the objectives carry the metrics' names, the trials their MLflow run ids as attributes."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromedriver are needed: `make test` installs Debian's chromium and "
                    "chromium-driver packages when they are missing")
    import urllib.request

    import yaml

    space = tmp_path / "mo.yaml"
    space.write_text(yaml.safe_dump({
        "model": "zscrgan", "fixed": {"em_iterations": 2, "updates_per_step": 10},
        "objective": [{"metric": "precision@50", "mode": "max"}, {"metric": "compute_wall_s", "mode": "min"}],
        "params": {"alpha": {"type": "uniform", "low": 0.1, "high": 2.0}}}))
    assert main(["search", "zscrgan", "--space", str(space), "--trials", "3", "--name", "dash",
                 "--progress-every", "0"]) == 0
    run_ids = {r.info.run_id for r in client().search_runs(
        [read_meta("dash", None).experiment_id], filter_string="tags.`zsexp.sweep` = 'dash' and "
                                                               "tags.`zsexp.kind` = 'trial'")}
    port = _free_port()
    log = tmp_path / "dash.log"
    ui = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "ui", "dash", "--dashboard", "--port", str(port)],
                          stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    shots: list[str] = []
    driver = None

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        _wait(up, 120, "optuna-dashboard", shots)
        url = next(w for w in log.read_text().split() if w.startswith("http://127.0.0.1"))
        assert f":{port}/dashboard/studies/" in url
        driver = _browser()
        shot = _shooter(driver, tmp_path, shots)
        page_has = functools.partial(_page_has, driver)

        driver.get(url)
        _wait(page_has("dash", "val_precision_at_50", "compute_wall_s"), 90, "the study's named objectives",
              shots, shot)
        shot("1-study")
        driver.get(url.rstrip("/") + "/trials")
        _wait(page_has("mlflow_run_id", "outcome"), 90, "the trials' attributes", shots, shot)
        body = driver.find_element("tag name", "body").text
        assert any(r in body for r in run_ids), "no trial shows its MLflow run id"
        shot("2-trials")
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    assert all(Path(s).stat().st_size > 10_000 for s in shots), shots
