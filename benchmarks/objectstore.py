"""What keeping a sweep in an object store costs, against a real S3 server (SeaweedFS on loopback).

    OMP_NUM_THREADS=1 python benchmarks/objectstore.py                          # every part
    OMP_NUM_THREADS=1 python benchmarks/objectstore.py --parts compare --repeats 5
    OMP_NUM_THREADS=1 python benchmarks/objectstore.py --parts scale --scale 256
    OMP_NUM_THREADS=1 python benchmarks/objectstore.py --parts lease --ttls 60 10

Every command runs as a user runs it, a new ``python -m zsexp.cli`` process with its own local Ray, so
the figures are what a user waits for.

* ``compare``: the same ZSCRGAN sweep (synthetic-tiny, ``--trials`` x ``--rounds``, 2 at once, no early
  stopping) on a local folder and on the store, interleaved, ``--repeats`` times each: the wall times,
  their ratio and the extra cost per trial.
* ``scale``: a ``--scale``-trial sweep on the store (one update per round: the driver's work dominates),
  then ``zsexp status NAME``, ``zsexp status`` (every sweep) and ``zsexp resume NAME`` of the finished
  sweep, three times each; the size of its study journal and of the objects a command copies.
* ``lease``: a sweep killed with SIGKILL (driver and its Ray) while it runs, then ``zsexp resume`` at
  once: the time from the kill until the resume holds the lease, for each ``--ttls`` value.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.s3server import S3Server  # noqa: E402

TINY = ["--scheduler", "none", "--set", "updates_per_step=10", "--progress-every", "0", "--max-concurrent", "2"]


def cli(env: dict[str, str], *args: str, timeout: float = 3600) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "zsexp.cli", *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"zsexp {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n"
                         f"{out.stderr[-2000:]}")
    return wall, out.stdout


def compare(env: dict[str, str], store: str, local: str, a: argparse.Namespace) -> None:
    walls: dict[str, list[float]] = {"local": [], "store": []}
    for r in range(a.repeats):
        for kind, storage in (("local", local), ("store", store)):
            wall, _ = cli(env, "search", "zscrgan", "--trials", str(a.trials), "--name", f"cmp-{kind}-{r}",
                          "--storage", storage, "--set", f"em_iterations={a.rounds}", *TINY)
            walls[kind].append(wall)
            print(f"  {kind:5} run {r + 1}: {wall:.1f} s", flush=True)
    loc, sto = statistics.median(walls["local"]), statistics.median(walls["store"])
    ratios = [s / lo for s, lo in zip(walls["store"], walls["local"], strict=True)]
    print(f"compare: {a.trials} trials x {a.rounds} rounds, 2 at once, {a.repeats} interleaved runs each")
    print(f"  local folder: median {loc:.1f} s (range {min(walls['local']):.1f}-{max(walls['local']):.1f})")
    print(f"  object store: median {sto:.1f} s (range {min(walls['store']):.1f}-{max(walls['store']):.1f})")
    print(f"  store / local: median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}); "
          f"extra per trial {(sto - loc) / a.trials:+.2f} s")


def scale(env: dict[str, str], store: str, server: S3Server, bucket: str, a: argparse.Namespace) -> None:
    name = f"scale-{a.scale}"
    wall, _ = cli(env, "search", "zscrgan", "--trials", str(a.scale), "--name", name, "--storage", store,
                  "--scheduler", "none", "--set", "updates_per_step=1", "--set", "em_iterations=2",
                  "--progress-every", "0", "--max-concurrent", "2")
    print(f"scale: a {a.scale}-trial sweep on the store ran in {wall:.0f} s")
    for args, label in ((("status", name), "zsexp status NAME"), (("status",), "zsexp status (all sweeps)"),
                        (("resume", name), "zsexp resume NAME (finished: nothing to run)")):
        times = [cli(env, *args, "--storage", store)[0] for _ in range(3)]
        print(f"  {label}: {statistics.median(times):.2f} s (3 runs: {', '.join(f'{t:.2f}' for t in times)})")
    keys = server.client().list_objects_v2(Bucket=bucket, Prefix=f"sweeps/{name}/optuna_journal.log")
    journal = keys["Contents"][0]["Size"] if keys.get("Contents") else 0
    every = server.keys(bucket, f"sweeps/{name}/")
    copied = [k for k in every if k.count("/") == 2 or "/zsexp_trials/" in k or k.endswith("/error.pkl")]
    print(f"  study journal {journal / 1024:.0f} KiB ({journal / a.scale / 1024:.1f} KiB per trial); "
          f"{len(every)} objects in the sweep, {len(copied)} of them copied by a command")


def lease(env: dict[str, str], store: str, a: argparse.Namespace) -> None:
    for ttl in a.ttls:
        name = f"lease-{ttl}"
        e = {**env, "ZSEXP_LEASE_TTL_S": str(ttl)}
        log = open(Path(a.work) / f"{name}.log", "w+")
        proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--trials", "8", "--name",
                                 name, "--storage", store, "--set", "em_iterations=30", *TINY], env=e, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and "running" not in Path(log.name).read_text():
            time.sleep(0.2)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.perf_counter()
        resume = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "resume", name, "--storage", store], env=e,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        took = None
        for line in resume.stdout:
            if "took over the lease" in line and took is None:
                took = time.perf_counter() - killed
        rc = resume.wait()
        print(f"lease: TTL {ttl} s: the resume held the dead driver's lease {took:.1f} s after the kill "
              f"(resume exit {rc})" if took is not None else f"lease: TTL {ttl} s: no takeover seen (exit {rc})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["compare", "scale", "lease"], choices=["compare", "scale", "lease"])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale", type=int, default=256)
    p.add_argument("--ttls", type=int, nargs="+", default=[60, 10])
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zsexp-objbench-"))
    a.work = str(work)
    server = S3Server(work / "s3").start()
    try:
        bucket = "bench"
        server.make_bucket(bucket)
        env = {**os.environ, **server.env(), "ZSEXP_HOME": str(work / "home"), "ZSEXP_STATE_KEY": "b" * 40,
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "ZSEXP_DATA_CACHE": str(work / "cache")}
        env.pop("MLFLOW_TRACKING_URI", None)
        store, local = f"s3://{bucket}/sweeps", str(work / "local-sweeps")
        if "compare" in a.parts:
            compare(env, store, local, a)
        if "scale" in a.parts:
            scale(env, store, server, bucket, a)
        if "lease" in a.parts:
            lease(env, store, a)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
