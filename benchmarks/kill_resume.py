"""Kill battery: SIGKILL the driver at seeded random moments, resume, and count what went wrong.

    python benchmarks/kill_resume.py [--kills 20] [--extend-kills 3] [--select-kills 2] [--ablate-kills 2]
                                     [--trials 4] [--seed 0]

Each sweep (``zsexp search zscrgan`` on synthetic-tiny, narrow nets, ASHA, a few rounds per trial)
runs as a subprocess in its own process group.  After a seeded random delay the whole group (the
driver and the Ray it started) gets SIGKILL, as if the machine died; then ``zsexp resume`` runs,
and may be killed again, until the sweep finishes.  A sweep takes kills until the battery's budget
is spent, then the next sweep starts.  The last sweep is then grown to twice its trials (``zsexp
resume SWEEP --trials 2T``), killed ``--extend-kills`` times and the same command re-run; it is then
selected (``zsexp select --k 2
--seeds 2``) and the selection is killed ``--select-kills`` times and re-run; then the ablation of its
winner (``zsexp ablate zscrgan --from SWEEP --variants no_gan --seeds 2``) is killed ``--ablate-kills``
times and re-run.

Printed, from the real stores (MLflow SQLite, Optuna journal, Tune's directory, a round log the
trainable writes with ``ZSEXP_ROUND_LOG``): kills survived (a later resume finished the sweep),
sweeps completed, duplicate child runs (two runs for one trial id), configurations trained twice
(one parameter set in two finished child runs), lost trials (finished trials short of the
requested number), re-run compute as a share of the rounds the sweeps needed, and the rounds
re-run per kill.  A JSON of every number is written beside (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def launch(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    f = open(log, "a")
    return subprocess.Popen([sys.executable, "-m", "zsexp.cli", *args], env=env, stdout=f, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_with_kills(first: list[str], again: list[str], env: dict[str, str], log: Path, kills_left: int,
                   rng: random.Random, max_delay: float, started: Path | None = None) -> tuple[int, int, list[float]]:
    """Run ``first``; while kills are left, SIGKILL it after a random delay and run ``again`` -- or
    ``first`` again when ``started`` (the sweep's metadata) does not exist yet: a sweep killed before
    it wrote anything was never created, and the user starts it again.
    Returns (kills made, final exit code, kill times)."""
    args, made, times = first, 0, []
    while True:
        proc = launch(args, env, log)
        delay = rng.uniform(0.5, max_delay) if made < kills_left else None
        try:
            rc = proc.wait(timeout=delay)
            return made, rc, times
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            made += 1
            times.append(round(delay, 2))
            with open(log, "a") as f:
                f.write(f"\n=== battery: SIGKILL after {delay:.2f}s ===\n")
            args = again if started is None or started.is_file() else first


def audit_rounds(round_log: Path, final_ids: set[str]) -> tuple[int, int]:
    """(rounds the sweeps needed, rounds run again): every (trial, round) the trainable ran, once per
    run of it; a round of a trial that is not one of the sweeps' final trials is all re-run."""
    lines = [ln.split() for ln in round_log.read_text().splitlines() if ln.strip()] if round_log.is_file() else []
    ran = Counter((t, int(r)) for t, r in lines)
    needed = sum(1 for (t, _r) in ran if t in final_ids)
    rerun = sum(n - 1 for (t, _r), n in ran.items() if t in final_ids) + sum(
        n for (t, _r), n in ran.items() if t not in final_ids)
    return needed, rerun


def audit_sweep(home: Path, name: str, trials: int) -> dict:
    import optuna
    from mlflow.tracking import MlflowClient

    from zsexp.search.optuna_search import journal_storage
    from zsexp.ui_links import sweep_filter

    sweep = home / "sweeps" / name
    meta = json.loads((sweep / "zsexp_sweep.json").read_text())
    c = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = c.search_runs([meta["experiment_id"]], filter_string=sweep_filter(name), max_results=10000)
    ids = Counter(r.data.tags["zsexp.trial_id"] for r in runs)
    finished = [r for r in runs if r.info.status in ("FINISHED", "FAILED")]
    cfgs = Counter(json.dumps({k: v for k, v in r.data.params.items()}, sort_keys=True) for r in finished)
    study = optuna.load_study(study_name=name, storage=journal_storage(sweep))
    told = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    return {"trial_ids": sorted(ids), "name": name, "status": meta["status"], "child_runs": len(runs),
            "distinct_trials": len(ids),
            "duplicate_child_runs": sum(n - 1 for n in ids.values()),
            "configs_trained_twice": sum(1 for n in cfgs.values() if n > 1),
            "finished_runs": len(finished), "lost_trials": max(0, trials - len(finished)),
            "optuna_told": len(told)}


def audit_selection(home: Path, name: str, k: int, seeds: int) -> dict:
    from mlflow.tracking import MlflowClient

    sel = home / "sweeps" / name / f"selection-k{k}-s{seeds}"
    done = (sel / "selection.json").is_file()
    c = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    sel_name = f"{name}-selection-k{k}-s{seeds}"
    exps = [e.experiment_id for e in c.search_experiments()]
    nested = c.search_runs(exps, filter_string=f"tags.`zsexp.selection` = '{sel_name}' and "
                                               f"tags.`zsexp.kind` = 'selection-run'", max_results=1000)
    pairs = Counter(r.data.tags["zsexp.pair"] for r in nested)
    versions = c.search_model_versions("name = 'zsexp-zscrgan-synthetic-tiny'")
    return {"finished": done, "nested_runs": len(nested), "expected_nested": 2 * k * seeds,
            "duplicate_nested": sum(n - 1 for n in pairs.values()), "registered_versions": len(versions)}


def audit_ablation(home: Path, name: str, expected: int) -> dict:
    from mlflow.tracking import MlflowClient

    out = home / "ablations" / name
    c = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exps = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(exps, filter_string=f"tags.`zsexp.ablation` = '{name}'", max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zsexp.kind") == "ablation"]
    nested = Counter(r.data.tags["zsexp.run"] for r in runs if r.data.tags.get("zsexp.kind") == "ablation-run")
    return {"finished": (out / "ablation.json").is_file(), "result_files": len(list(out.glob("*.s*.d*.json"))),
            "parent_runs": len(parents), "nested_runs": sum(nested.values()), "expected_nested": expected,
            "duplicate_nested": sum(n - 1 for n in nested.values()),
            "left_running": sum(r.info.status == "RUNNING" for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--extend-kills", type=int, default=3)
    ap.add_argument("--select-kills", type=int, default=2)
    ap.add_argument("--ablate-kills", type=int, default=2)
    ap.add_argument("--kills-per-sweep", type=int, default=5)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-delay", type=float, default=14.0, help="kill moments are uniform in [0.5, this] s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="kill_resume.json")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    home = Path(tempfile.mkdtemp(prefix="zsexp-kill-"))
    round_log = home / "rounds.log"
    env = {**os.environ, "ZSEXP_HOME": str(home), "ZSEXP_ROUND_LOG": str(round_log), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    log = home / "battery.log"
    t0 = time.time()
    sweeps, kill_times, kills = [], [], 0
    i = 0
    while kills < a.kills or not sweeps:
        name = f"kb{i}"
        i += 1
        search = ["search", "zscrgan", "--trials", str(a.trials), "--name", name, "--max-concurrent", "1",
                  "--set", f"em_iterations={a.rounds}", "--progress-every", "5", "--seed", str(i)]
        budget = min(a.kills_per_sweep, a.kills - kills)
        made, rc, times = run_with_kills(search, ["resume", name], env, log, budget, rng, a.max_delay,
                                         started=home / "sweeps" / name / "zsexp_sweep.json")
        kills += made
        kill_times += times
        sweeps.append({"name": name, "kills": made, "exit": rc})
        print(f"sweep {name}: {made} kill(s) at {times} s, final exit code {rc}", flush=True)
    audits = [audit_sweep(home, s["name"], a.trials) for s in sweeps]
    for s, au in zip(sweeps, audits, strict=True):
        s.update(au)
    # the last sweep grown to twice its trials, killed and the same command re-run
    last = sweeps[-1]["name"]
    grow_args = ["resume", last, "--trials", str(2 * a.trials)]
    made, rc, times = run_with_kills(grow_args, grow_args, env, log, a.extend_kills, rng, a.max_delay)
    ext = audit_sweep(home, last, 2 * a.trials)
    ext.update(kills=made, kill_times=times, exit=rc)
    # the selection, killed and re-run
    sel_args = ["select", last, "--k", "2", "--seeds", "2"]
    made, rc, times = run_with_kills(sel_args, sel_args, env, log, a.select_kills, rng, 10.0)
    sel = audit_selection(home, last, 2, 2)
    sel.update(kills=made, kill_times=times, exit=rc)
    # the ablation of the selected winner, killed and re-run (the same command resumes it)
    abl_args = ["ablate", "zscrgan", "--from", last, "--variants", "no_gan", "--seeds", "2", "--name", "kb-ablation"]
    made, rc, times = run_with_kills(abl_args, abl_args, env, log, a.ablate_kills, rng, 25.0)   # past Ray's start
    abl = audit_ablation(home, "kb-ablation", 4)
    abl.update(kills=made, kill_times=times, exit=rc)
    wall = time.time() - t0

    survived = sum(s["kills"] for s in sweeps if s["exit"] == 0 and s["status"] == "finished")
    needed, rerun = audit_rounds(round_log, {t for s in sweeps for t in s["trial_ids"]} | set(ext["trial_ids"]))
    figures = {
        "kills": kills, "kills_survived": survived, "sweeps": len(sweeps),
        "sweeps_completed": sum(s["status"] == "finished" and s["exit"] == 0 for s in sweeps),
        "duplicate_child_runs": sum(s["duplicate_child_runs"] for s in sweeps),
        "configs_trained_twice": sum(s["configs_trained_twice"] for s in sweeps),
        "lost_trials": sum(s["lost_trials"] for s in sweeps),
        "rounds_needed": needed, "rounds_rerun": rerun, "rerun_share": rerun / max(1, needed),
        "rerun_rounds_per_kill": rerun / max(1, kills + ext["kills"]),      # the extension's kills re-run rounds too
        "extension": {k: v for k, v in ext.items() if k != "trial_ids"},
        "selection": sel, "ablation": abl, "sweep_details": sweeps, "kill_times_s": kill_times,
        "wall_s": round(wall, 1), "home": str(home)}
    Path(a.out).write_text(json.dumps(figures, indent=2))
    print()
    print(f"kills survived          {survived} of {kills} (across {len(sweeps)} sweeps)")
    print(f"sweeps completed        {figures['sweeps_completed']} of {len(sweeps)}")
    print(f"duplicate child runs    {figures['duplicate_child_runs']}")
    print(f"configs trained twice   {figures['configs_trained_twice']}")
    print(f"lost trials             {figures['lost_trials']}")
    print(f"re-run compute          {rerun} of {needed} rounds = {100 * figures['rerun_share']:.1f}% "
          f"({figures['rerun_rounds_per_kill']:.2f} rounds per kill, {kills + ext['kills']} sweep kills)")
    print(f"extension to {2 * a.trials:<10} {ext['kills']} kills at {ext['kill_times']} s, exit {ext['exit']}, status "
          f"{ext['status']}, finished trials {ext['finished_runs']}/{2 * a.trials}, duplicate child runs "
          f"{ext['duplicate_child_runs']}, configs trained twice {ext['configs_trained_twice']}, Optuna told "
          f"{ext['optuna_told']}")
    print(f"selection               {sel['kills']} kills, finished={sel['finished']}, nested runs "
          f"{sel['nested_runs']}/{sel['expected_nested']}, duplicates {sel['duplicate_nested']}, registered "
          f"versions {sel['registered_versions']}")
    print(f"ablation                {abl['kills']} kills at {abl['kill_times']} s, finished={abl['finished']}, "
          f"result files {abl['result_files']}/{abl['expected_nested']}, MLflow parent runs {abl['parent_runs']}, "
          f"nested {abl['nested_runs']}/{abl['expected_nested']}, duplicates {abl['duplicate_nested']}, left "
          f"RUNNING {abl['left_running']}")
    print(f"wall time {wall:.0f}s; stores under {home}; figures in {a.out}")


if __name__ == "__main__":
    main()
