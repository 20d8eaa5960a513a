"""Pieces both model families share: device choice, MLPs, init, divergence checks, checkpoint I/O."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zsexp.errors import ZsexpError
from zsexp.metrics import zsl_chance, zsl_metrics_from_ranks, zsl_ranks_from_embeddings


class DivergenceError(FloatingPointError):
    """A loss became NaN/inf: the trial is failed, not silently continued."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ZsexpError("--device cuda requested but no CUDA device is available; use --device auto or cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ZsexpError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def configure_cpu_math() -> None:
    """Flush denormal floats to zero on CPU.  N(0, 0.02) weights and a critic clipped to +-0.01 make
    many denormal products, which x86 handles in slow microcode (measured: +12% GAN updates/s at
    the paper's widths).  No effect on CUDA; values below 1e-38 are noise for these models."""
    torch.set_flush_denormal(True)


def check_fit_split(fit_split: str) -> str:
    if fit_split not in ("train", "trainval"):
        raise ZsexpError(f"fit_split must be train or trainval, got {fit_split!r}")
    return fit_split


def zsl_candidates(data: Any, split: str, fit_split: str, who: str) -> dict[str, np.ndarray]:
    """The candidate classes an image of ``split`` (val or test) is ranked among (CM-GAN §4.2;
    ridge-zsl alike): ZSL, the split's own classes; GZSL, those plus every class seen in training (all
    of train + val on test, whichever split was fitted; the fit classes on val).  Sorted class indices."""
    if split not in ("val", "test"):
        raise ZsexpError(f"{who} evaluates on val or test, got {split!r}")
    check_eval_split(split, fit_split)
    unseen = data.classes(split)
    seen = data.classes("trainval") if split == "test" else data.classes(fit_split)
    return {"zsl": np.sort(unseen), "gzsl": np.unique(np.concatenate([seen, unseen]))}


def zsl_evaluation(images: torch.Tensor, labels: np.ndarray, candidates: dict[str, np.ndarray],
                   class_vectors: Callable[[np.ndarray], torch.Tensor], ks: list[int],
                   per_image: bool = False) -> dict[str, Any]:
    """FH@k and MFR (eq. 7) of every setting in ``candidates``: cosine ranking of the candidates'
    ``class_vectors`` for each image embedding; with ``per_image`` also each image's rank."""
    res: dict[str, Any] = {}
    for setting, cands in candidates.items():
        pos = torch.as_tensor(np.searchsorted(cands, labels))
        ranks = zsl_ranks_from_embeddings(images, class_vectors(cands), pos)
        for key, val in zsl_metrics_from_ranks(ranks, len(cands), ks).items():
            res[f"{setting}/{key}"] = val
        if per_image:
            res[f"{setting}/ranks"] = ranks.cpu().tolist()
    return res


def zsl_chance_of(candidates: dict[str, np.ndarray], ks: list[int]) -> dict[str, float]:
    """Chance FH@k / MFR of every setting in ``candidates``."""
    return {f"{setting}/{k}": v for setting, cands in candidates.items() for k, v in zsl_chance(len(cands), ks).items()}


def check_eval_split(split: str, fit_split: str) -> None:
    """A model fitted on train + val has no unseen validation classes left to be evaluated on."""
    if split == "val" and fit_split == "trainval":
        raise ZsexpError("a model fitted on train + val has seen the validation classes: evaluate it on test")


def set_threads(n: int | None) -> int:
    """Intra-op CPU threads of this process (``None``: torch's default, one per core); returns the count."""
    if n is not None:
        if n < 1:
            raise ZsexpError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def mlp(sizes: list[int], hidden_act: nn.Module, out_act: nn.Module | None = None) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ``hidden_act`` between them."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(hidden_act)
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def normal_init_(module: nn.Module, std: float = 0.02) -> None:
    """Weights and biases ~ N(0, std) (ZSCRGAN §3.3.3)."""
    for p in module.parameters():
        nn.init.normal_(p, 0.0, std)


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """The training loop's random stream, on the model's device: batches, indices and noise are drawn
    where they are used, with no host-to-device copy per batch.  On CPU it is the same stream as a
    plain ``torch.Generator().manual_seed(seed)``."""
    return torch.Generator(device=device).manual_seed(seed)


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    return {"state": gen.get_state(), "device": gen.device.type}


def restore_rng(gen: torch.Generator, saved: Any, reseed: int) -> None:
    """Continue a checkpoint's random stream exactly on the same device kind.  A stream saved on another
    device kind (a GPU run resumed on a CPU) cannot be continued: the generator is reseeded from
    ``reseed`` (deterministic, but not the stream an uninterrupted run would have drawn)."""
    if isinstance(saved, torch.Tensor):                  # checkpoints before device generators: CPU state
        saved = {"state": saved, "device": "cpu"}
    if saved["device"] == gen.device.type:
        gen.set_state(saved["state"])
    else:
        import warnings

        warnings.warn(f"checkpoint random state is from a {saved['device']} generator; continuing on "
                      f"{gen.device.type} with a reseeded stream (results differ from an uninterrupted run)",
                      stacklevel=2)
        gen.manual_seed(reseed)


PRECISIONS = ("fp32", "tf32", "bf16")


def apply_precision(precision: str, device: torch.device) -> None:
    """``tf32``: let CUDA matmuls and convolutions use TF32 tensor cores (Ampere and later; a
    process-wide torch switch, no effect on CPU).  ``fp32`` and ``bf16`` change nothing here (bf16 is
    an autocast context around the training passes, :func:`train_autocast`)."""
    if precision == "tf32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def train_autocast(precision: str, device: torch.device):
    """bfloat16 autocast of a training round's forward passes (``precision=bf16``); a no-op otherwise.
    Parameters, optimiser state and the evaluation stay float32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def adam_kwargs(fused: bool) -> dict[str, Any]:
    """torch's fused Adam kernel (CPU and CUDA) when asked; torch's default implementation otherwise."""
    return {"fused": True} if fused else {}


def compile_forward(nets: list[nn.Module]) -> None:
    """``compile=true``: each network's forward through ``torch.compile`` (fixed shapes, so one graph per
    batch shape; the first round pays the compilation: about 20 s for ZSCRGAN on a 2-core CPU).  The
    modules and their state dicts stay as they are; inductor needs a C++ compiler on CPU and Triton on
    CUDA."""
    for net in nets:
        net.forward = torch.compile(net.forward, dynamic=False)


HOST_READS = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu")


def host_reads_during(fn: Callable[[], Any]) -> int:
    """Calls of tensor host-transfer methods (:data:`HOST_READS`, each a device synchronisation on a
    GPU) made directly by zsexp code while ``fn`` runs.  torch's own CPU optimiser step counters, read
    inside torch, live on the host by design and are not counted.  A diagnostic for tests and
    benchmarks: it patches ``torch.Tensor`` for the duration of the call."""
    import sys

    pkg = str(Path(__file__).resolve().parents[1])
    n = 0
    saved = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(orig):
        def counted(self, *a, **k):
            nonlocal n
            if sys._getframe(1).f_code.co_filename.startswith(pkg):
                n += 1
            return orig(self, *a, **k)
        return counted

    try:
        for name, orig in saved.items():
            setattr(torch.Tensor, name, counting(orig))
        fn()
    finally:
        for name, orig in saved.items():
            setattr(torch.Tensor, name, orig)
    return n


def read_means(logs: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Per-key means of losses kept on the device during a round, read back in ONE host transfer
    (a GPU synchronises once per round, not once per update)."""
    keys = [k for k, v in logs.items() if v]
    if not keys:
        return {}
    means = torch.stack([torch.stack(logs[k]).float().mean() for k in keys])
    return dict(zip(keys, means.tolist(), strict=True))


def check_finite(losses: dict[str, float], where: str) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise DivergenceError(f"{where}: loss diverged: {bad}")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomic write: a crash mid-save never corrupts the previous checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


MAX_CHECKPOINT_BYTES = 4 << 30      # a zsexp checkpoint of the papers' widths is a few hundred MB at most


def _check_checkpoint_size(path: Path) -> None:
    """Refuse a checkpoint larger than :data:`MAX_CHECKPOINT_BYTES` on disk or, as a zip, once its members are
    decompressed (read from the zip's directory, before anything is loaded)."""
    import zipfile

    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise ZsexpError(f"{path}: {size / 2**30:.1f} GiB; a checkpoint may be at most {MAX_CHECKPOINT_BYTES >> 30} "
                         f"GiB: refused")
    try:
        with zipfile.ZipFile(path) as z:
            total = sum(m.file_size for m in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return                                            # not a zip: torch.load's own error names it
    if total > MAX_CHECKPOINT_BYTES:
        raise ZsexpError(f"{path}: its members hold {total / 2**30:.1f} GiB once decompressed; a checkpoint may hold "
                         f"at most {MAX_CHECKPOINT_BYTES >> 30} GiB: refused")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """``weights_only=True``: a checkpoint can hold tensors and plain containers, never code."""
    path = Path(path)
    if not path.is_file():
        raise ZsexpError(f"checkpoint not found: {path}")
    _check_checkpoint_size(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ZsexpError(f"{path}: not a readable zsexp checkpoint ({first[:200]})") from None


def optimizer_to(opt: torch.optim.Optimizer, device: torch.device) -> None:
    for state in opt.state.values():
        for k, v in state.items():
            if isinstance(v, torch.Tensor) and k != "step":
                state[k] = v.to(device)
