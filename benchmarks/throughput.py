"""Training throughput of both models and the achieved fraction of a matmul peak measured in the same run.

    python benchmarks/throughput.py [--device cpu|cuda] [--seconds 20]

ZSCRGAN at the paper's widths (image 2048, text 1024, TE 2 x 1024, z 256, G 2048/4096, D 1024),
batch 64: E-M-equivalent GAN updates per second, one update = ``d_steps`` (5) critic steps + one
generator step.  CM-GAN on synthetic-imagenet (d 300 word vectors, hidden 500, batch 128): iterations per second
of a supervised and of a transductive step (small matrices: far from the peak by nature).

FLOPs are counted analytically from the layer shapes: a linear layer costs 2*B*in*out forward;
backward costs the same again for the weight gradient and again for the input gradient when the
input needs one.  The peak is the best GFLOP/s of a square float32 matmul of the width the models
use most (4096 on CPU, 8192 on GPU), measured just before.
"""

from __future__ import annotations

import argparse
import time

import torch

from zsexp.data.schema import ZSLData, validate


def matmul_peak(device: torch.device, n: int, seconds: float = 3.0) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    best, t_end = 0.0, time.time() + seconds
    while time.time() < t_end:
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _lin(b: int, i: int, o: int, backward: bool, input_grad: bool) -> float:
    f = 2.0 * b * i * o
    return f + (f if backward else 0.0) + (f if backward and input_grad else 0.0)


def zscrgan_flops_per_update(b: int, dv: int, dt: int, lat: int, nz: int, gh: list[int], dh: int,
                             d_steps: int) -> float:
    """FLOPs of one GAN update: per critic step TE + G forward (no grad) and D forward + weight-gradient
    backward on real, fake and wrong batches; the generator step TE on real + wrong, G forward and
    backward, D forward and its input gradient."""
    g_layers = list(zip([nz + lat, *gh], [*gh, dv], strict=True))
    te = lambda bw, ig: _lin(b, dt, 2 * lat, bw, ig)                            # noqa: E731
    g = lambda bw: sum(_lin(b, i, o, bw, bw) for i, o in g_layers)               # noqa: E731
    d = lambda bw, ig: _lin(b, dv + dt, dh, bw, ig) + _lin(b, dh, 1, bw, bw)    # noqa: E731
    critic = te(False, False) + g(False) + 3 * d(True, False)
    gen = 2 * te(True, False) + g(True) + d(False, False) + 2.0 * b * (dv + dt) * dh   # D: input grad only
    return d_steps * critic + gen


def bench_zscrgan(device: torch.device, seconds: float, overrides: dict | None = None) -> dict:
    from zsexp.models import build_model, make_config

    n_cls, per, dv, dt = 20, 40, 2048, 1024
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n_cls).repeat_interleave(per)
    data = validate(ZSLData(
        name="bench", features=torch.rand(n_cls * per, dv, generator=gen).numpy(), labels=labels.numpy(),
        class_embeddings=torch.randn(n_cls, dt, generator=gen).numpy(), class_names=[str(i) for i in range(n_cls)],
        train_classes=torch.arange(0, 14).numpy(), val_classes=torch.arange(14, 17).numpy(),
        test_classes=torch.arange(17, 20).numpy()))
    paper = {"g_hidden": [2048, 4096], "d_hidden": 1024, "latent_dim": 1024, "noise_dim": 256}  # not the size rule
    cfg = make_config("zscrgan", data, ("bench", {"batch_size": 64, "em_schedule": "fixed", "updates_per_step": 1,
                                                  **paper, **(overrides or {})}))
    from zsexp.models.common import train_autocast

    model = build_model("zscrgan", cfg, data, device=device)
    with train_autocast(cfg.precision, device):         # as train_round runs them (precision=bf16)
        model.e_step()
        model._critic_steps(cfg.d_steps)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model._critic_steps(cfg.d_steps)       # exactly what train_round runs per GAN update
            model.e_step()
            n += 1
    _sync(device)
    dt_s = time.perf_counter() - t0
    flops = zscrgan_flops_per_update(cfg.batch_size, dv, dt, cfg.latent_dim, cfg.noise_dim, cfg.g_hidden,
                                     cfg.d_hidden, cfg.d_steps)
    return {"updates_per_s": n / dt_s, "gflops": n * flops / dt_s / 1e9, "updates": n}


def cmgan_flops(b: int, d: int, h: int, dh: int) -> dict[str, float]:
    """FLOPs of one supervised and one transductive iteration as the code runs them."""
    m_fwd = 2.0 * b * (d * h + h * d)              # one map (T_k or V_k) on b rows
    d_fwd = 2.0 * b * (d * dh + dh)                # one critic on b rows
    # supervised: T(v) and V(t), forward + weight and input gradients of the second layer
    sup = 2 * m_fwd * 3
    # transductive: critic step (2 maps no-grad, 4 critic calls with weight grads) and map step
    # (T(v), V(t), T(V(t)), V(T(v)), 2 critic calls with input grads only, all map weight grads)
    critic = 2 * m_fwd + 4 * d_fwd * 2
    maps = 4 * m_fwd * 3 + 2 * d_fwd * 2
    return {"sup": sup, "trans": critic + maps}


def bench_cmgan(device: torch.device, seconds: float, hidden: int = 500) -> dict:
    from zsexp.data import load_dataset
    from zsexp.models import build_model, make_config

    data = load_dataset("synthetic-imagenet")
    cfg = make_config("cmgan", data, ("bench", {"hidden": hidden, "d_hidden": hidden, "batch_size": 128}))
    model = build_model("cmgan", cfg, data, device=device)
    out = {}
    for kind, fn in (("sup", model._sup_iteration), ("trans", lambda: model._trans_iteration(1.0))):
        fn()
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            fn()
            n += 1
        _sync(device)
        out[f"{kind}_iters_per_s"] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    device = torch.device(args.device)
    from zsexp.models.common import configure_cpu_math

    configure_cpu_math()          # as `zsexp train` and sweep trials run
    n = 8192 if device.type == "cuda" else 4096
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    peak = matmul_peak(device, n)
    print(f"matmul peak ({n}x{n} fp32): {peak:.1f} GFLOP/s")
    z = bench_zscrgan(device, args.seconds)
    print(f"ZSCRGAN paper widths, batch 64: {z['updates_per_s']:.2f} GAN updates/s "
          f"({z['updates']} updates), {z['gflops']:.1f} GFLOP/s = {z['gflops'] / peak:.2f} of peak")
    c = bench_cmgan(device, args.seconds / 2)
    fl = cmgan_flops(128, 300, 500, 500)
    for kind in ("sup", "trans"):
        rate = c[f"{kind}_iters_per_s"]
        gf = rate * fl[kind] / 1e9
        print(f"CM-GAN {kind} step (d=300 word vectors, hidden 500, batch 128): {rate:.0f} it/s, "
              f"{gf:.1f} GFLOP/s = {gf / peak:.2f} of peak")


if __name__ == "__main__":
    main()
