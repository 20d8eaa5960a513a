"""GPU readiness figures (run anywhere; on a CPU it reports CPU figures and says so).

    python benchmarks/gpu.py [--device cuda|cpu] [--seconds 10]
    python benchmarks/gpu.py --sweep [--trials 8] [--fractions 1,0.5,0.25,0.125]

1. Updates per second and the fraction of a measured fp32 matmul peak, for ZSCRGAN (GAN updates:
   ``d_steps`` critic steps + one generator step, batch 64) and CM-GAN (supervised / transductive
   iterations, batch 128), at the paper's widths and at the narrow widths of the small-data rule;
   ZSCRGAN also with each optional speed path (``precision=tf32``, ``precision=bf16``, ``fused_adam``,
   ``compile``, compile + bf16; tf32 is a no-op on CPU; compile's first calls are warm-up, not timed).
2. Host reads per training round: calls of ``item``/``float``/``int``/``bool``/``tolist``/``numpy``/
   ``cpu`` made by zsexp code during one round on synthetic-tiny (each is a device synchronisation
   on a GPU), for a 20-update ZSCRGAN round and a 300-iteration CM-GAN round.
3. ``--sweep``: trials per hour of a real ``zsexp search zscrgan`` on synthetic-tiny (``--scheduler
   none``, fixed budget per trial) with ``--gpus 1 --gpus-per-trial F`` for each fraction F, and the
   GPU utilisation sampled from ``nvidia-smi`` every 0.5 s (mean over the sweep).  Without a GPU it
   runs the same sweep on CPUs (``--gpus 0``) once and says that no GPU figure was measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import bench_cmgan, bench_zscrgan, cmgan_flops, matmul_peak  # noqa: E402

NARROW = {"g_hidden": [256, 512], "d_hidden": 256, "latent_dim": 64, "noise_dim": 32}


def host_reads(family: str, sets: dict, device: torch.device) -> int:
    from zsexp.data import load_dataset
    from zsexp.models import build_model, make_config
    from zsexp.models.common import host_reads_during

    data = load_dataset("synthetic-tiny")
    model = build_model(family, make_config(family, data, ("bench", sets)), data, device=device)
    model.train_round()                      # the first round builds tables; count a steady one
    return host_reads_during(model.train_round)


def gpu_sampler(stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5)
            out.append(float(r.stdout.strip().splitlines()[0]))
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return
        stop.wait(0.5)


def sweep(trials: int, gpus: int, fraction: float | None) -> dict:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ZSEXP_HOME": home}
        cmd = [sys.executable, "-m", "zsexp.cli", "search", "zscrgan", "--dataset", "synthetic-tiny", "--trials",
               str(trials), "--name", "gpu-bench", "--scheduler", "none", "--progress-every", "0",
               "--set", "em_iterations=10", "--set", "updates_per_step=100", "--gpus", str(gpus)]
        if fraction is not None:
            cmd += ["--gpus-per-trial", str(fraction), "--cpus-per-trial", str(max(0.25, round(fraction, 3)))]
        util: list[float] = []
        stop = threading.Event()
        th = threading.Thread(target=gpu_sampler, args=(stop, util), daemon=True)
        if gpus and shutil.which("nvidia-smi"):
            th.start()
        t0 = time.time()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        stop.set()
        if proc.returncode != 0:
            raise SystemExit(f"sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"wall_s": wall, "trials_per_hour": trials * 3600 / wall,
            "gpu_util_mean": statistics.mean(util) if util else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--fractions", default="1,0.5,0.25,0.125")
    args = ap.parse_args()
    device = torch.device(args.device)
    from zsexp.models.common import configure_cpu_math

    configure_cpu_math()
    on_gpu = device.type == "cuda"
    print(f"device {device}{'' if on_gpu else ' (no GPU: CPU figures; this has NOT run on a GPU)'}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    n = 8192 if on_gpu else 4096
    peak = matmul_peak(device, n)
    print(f"matmul peak ({n}x{n} fp32): {peak:.1f} GFLOP/s")
    print("| model | widths | rate | GFLOP/s | fraction of peak |\n|---|---|---|---|---|")
    widths = (("paper (G 2048-4096, D 1024, latent 1024)", {}), ("narrow (G 256-512, D 256, latent 64)", NARROW))
    for label, ov in widths:
        z = bench_zscrgan(device, args.seconds, ov)
        print(f"| ZSCRGAN | {label} | {z['updates_per_s']:.1f} GAN updates/s | {z['gflops']:.1f} | "
              f"{z['gflops'] / peak:.3f} |")
    paths = ({"precision": "tf32"}, {"precision": "bf16"}, {"fused_adam": True}, {"compile": True},
             {"compile": True, "precision": "bf16"})
    for path in paths:                                                   # the optional speed paths
        z = bench_zscrgan(device, args.seconds, path)
        name = ", ".join(f"{k}={v}" for k, v in path.items())
        print(f"| ZSCRGAN {name} | paper | {z['updates_per_s']:.1f} GAN updates/s | {z['gflops']:.1f} | "
              f"{z['gflops'] / peak:.3f} |")
    for hidden in (500, 64):
        c = bench_cmgan(device, args.seconds / 2, hidden)
        fl = cmgan_flops(128, 300, hidden, hidden)
        for kind in ("sup", "trans"):
            rate = c[f"{kind}_iters_per_s"]
            gf = rate * fl[kind] / 1e9
            print(f"| CM-GAN {kind} | hidden {hidden} | {rate:.0f} it/s | {gf:.2f} | {gf / peak:.4f} |")
    zr = host_reads("zscrgan", {"em_schedule": "fixed", "updates_per_step": 20}, device)
    cr = host_reads("cmgan", {"iters_per_step": 300}, device)
    print(f"host reads per round by zsexp code: ZSCRGAN {zr} (20 updates), CM-GAN {cr} (300 iterations)")
    if args.sweep:
        if on_gpu:
            for f in (float(x) for x in args.fractions.split(",")):
                r = sweep(args.trials, 1, f)
                util = "n/a" if r["gpu_util_mean"] is None else f"{r['gpu_util_mean']:.0f}%"
                print(f"sweep --gpus 1 --gpus-per-trial {f}: {args.trials} trials in {r['wall_s']:.0f}s = "
                      f"{r['trials_per_hour']:.0f} trials/GPU-hour, GPU utilisation {util}")
        else:
            r = sweep(args.trials, 0, None)
            print(f"sweep on CPUs (--gpus 0, no GPU here): {args.trials} trials in {r['wall_s']:.0f}s = "
                  f"{r['trials_per_hour']:.0f} trials/hour; no GPU figure measured")


if __name__ == "__main__":
    main()
