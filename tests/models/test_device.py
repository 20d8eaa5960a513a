"""Device paths: few host reads per round, device RNG, CPU fall-back of the GPU paths, compiled forward."""

from __future__ import annotations

import copy
import shutil
import warnings

import pytest
import torch

from zsexp.errors import ZsexpError
from zsexp.models import build_model, make_config
from zsexp.models.cmgan import ABLATIONS as CMGAN_ABLATIONS
from zsexp.models.common import device_generator, host_reads_during, resolve_device, restore_rng, rng_state
from zsexp.models.zscrgan import ABLATIONS as ZSCRGAN_ABLATIONS


@pytest.mark.parametrize("ablation", ZSCRGAN_ABLATIONS)
def test_zscrgan_round_reads_the_device_back_at_most_10_times(tiny, ablation):
    cfg = make_config("zscrgan", tiny, ("t", {"ablation": ablation, "em_schedule": "fixed", "updates_per_step": 20}))
    m = build_model("zscrgan", cfg, tiny)
    m.train_round()
    assert host_reads_during(m.train_round) <= 10          # was 200 float() calls for 20 updates


@pytest.mark.parametrize("ablation", [a for a in CMGAN_ABLATIONS if a != "conse"])
def test_cmgan_round_reads_the_device_back_at_most_10_times(tiny, ablation):
    cfg = make_config("cmgan", tiny, ("t", {"ablation": ablation, "iters_per_step": 100, "max_steps": 2}))
    m = build_model("cmgan", cfg, tiny)
    assert host_reads_during(m.train_round) <= 10          # was one float() per loss per iteration


def test_device_generator_matches_a_plain_cpu_generator_and_survives_checkpoints(tiny):
    a, b = device_generator(torch.device("cpu"), 3), torch.Generator().manual_seed(3)
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    cfg = make_config("zscrgan", tiny, ("t", {"em_schedule": "fixed", "updates_per_step": 5}))
    m = build_model("zscrgan", cfg, tiny)
    m.train_round()
    state = copy.deepcopy(m.state_dict())        # as on disk: not the live parameters
    assert state["rng"]["device"] == "cpu"
    m.train_round()
    again = build_model("zscrgan", cfg, tiny)
    again.load_state_dict(state)
    again.train_round()
    assert again.evaluate("test") == pytest.approx(m.evaluate("test"))     # resume continues the stream


def test_rng_from_another_device_kind_reseeds_with_a_warning():
    g = device_generator(torch.device("cpu"), 0)
    saved = rng_state(torch.Generator().manual_seed(1)) | {"device": "cuda"}
    with pytest.warns(UserWarning, match="reseeded"):
        restore_rng(g, saved, reseed=42)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(42)))
    old = torch.Generator().manual_seed(5).get_state()       # a checkpoint from before device generators
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore_rng(g, old, reseed=0)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(5)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback where no GPU is present")
def test_gpu_paths_fall_back_cleanly_on_cpu(tiny):
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ZsexpError, match="no CUDA device"):
        resolve_device("cuda")
    m = build_model("cmgan", make_config("cmgan", tiny, ("t", {"iters_per_step": 10})), tiny,
                    device=resolve_device("auto"))
    m.train_round()
    assert m.gen.device.type == "cpu" and m.dev_pools["sup"].device.type == "cpu"


@pytest.mark.parametrize("family,sets", [("zscrgan", {"em_schedule": "fixed", "updates_per_step": 10}),
                                         ("cmgan", {"iters_per_step": 40})])
def test_speed_paths_on_cpu(tiny, family, sets):
    """tf32 is a CUDA switch (identical on CPU); fused Adam is the same update up to float rounding;
    bf16 autocast trains, stays finite and keeps its parameters and optimiser state in float32."""
    def run(**extra):
        torch.manual_seed(0)
        m = build_model(family, make_config(family, tiny, ("t", {**sets, **extra})), tiny)
        losses = m.train_round()
        return m, losses

    ref, ref_losses = run()
    tf32, tf32_losses = run(precision="tf32")
    assert tf32_losses == ref_losses and tf32.evaluate("val") == ref.evaluate("val")
    fused, fused_losses = run(fused_adam=True)
    assert fused_losses == pytest.approx(ref_losses, rel=1e-3, abs=1e-4)
    bf16, bf16_losses = run(precision="bf16")
    assert all(torch.isfinite(torch.tensor(v)) for v in bf16_losses.values())
    assert bf16_losses != ref_losses                      # autocast really ran in bfloat16
    nets = bf16.networks() if family == "zscrgan" else {"t_map": bf16.t_map, "v_map": bf16.v_map}
    assert all(p.dtype == torch.float32 for net in nets.values() for p in net.parameters())


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler, and this machine has none")
def test_compiled_forward_matches_eager(tiny):
    sets = {"em_schedule": "fixed", "updates_per_step": 5}

    def run(**extra):
        torch.manual_seed(0)
        m = build_model("zscrgan", make_config("zscrgan", tiny, ("t", {**sets, **extra})), tiny)
        return m, m.train_round()

    eager, eager_losses = run()
    compiled, compiled_losses = run(compile=True)
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-4)
    assert compiled.evaluate("val") == pytest.approx(eager.evaluate("val"), abs=1.0)
    assert set(compiled.state_dict()["nets"]["g"]) == set(eager.state_dict()["nets"]["g"])   # checkpoints unchanged

