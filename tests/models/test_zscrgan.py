"""ZSCRGAN: each loss against its equation, Alg. 1 schedule and E-M steps, resume equality, learning above chance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import zscrgan_model
from zsexp.models import build_model, make_config
from zsexp.models.common import DivergenceError, load_checkpoint, save_checkpoint
from zsexp.models.zscrgan import (
    ABLATIONS,
    critic_loss,
    generator_loss,
    kl_standard_normal,
    log_odds_regulariser,
    triplet_loss,
)


def _train(m, rounds):
    for _ in range(rounds):
        m.train_round()
    return m


def test_critic_loss_eq11():
    d_real, d_fake, d_wrong = torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 1.0])
    # (E D(G) + E D(I_w)) / 2 - E D(I_r) = (0.5 + 0) / 2 - 2
    assert critic_loss(d_real, d_fake, d_wrong).item() == pytest.approx(0.25 - 2.0)
    assert critic_loss(d_real, d_fake, None).item() == pytest.approx(0.5 - 2.0)


def test_kl_closed_form_eq17():
    mu, log_sigma = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.2, -0.5]])
    want = sum(-ls + 0.5 * (math.exp(2 * ls) + m * m - 1) for m, ls in [(0.3, 0.2), (-1.0, -0.5)]) / 2
    assert kl_standard_normal(mu, log_sigma).item() == pytest.approx(want, rel=1e-6)
    assert kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).item() == pytest.approx(0.0)


def test_log_odds_regulariser_eqs13_15():
    fake = torch.tensor([[1.0, 1.0]])
    real, wrong = torch.tensor([[1.5, 0.0]]), torch.tensor([[4.0, 1.0]])
    d_p, d_n = 1.5, 3.0 - 2.0                     # Manhattan; d_n includes -lambda
    p = math.exp(-d_p) / (math.exp(-d_p) + math.exp(-d_n))        # eq. 14
    r_eq13 = -math.log(p / (1 - p))                              # eq. 13
    assert log_odds_regulariser(fake, real, wrong, lam=2.0).item() == pytest.approx(r_eq13, rel=1e-6)
    assert r_eq13 == pytest.approx(d_p - d_n)                    # eq. 15
    # the hinge form only counts violations of the margin
    assert log_odds_regulariser(fake, real, wrong, lam=0.0, form="hinge").item() == pytest.approx(0.0)
    assert log_odds_regulariser(fake, real, None, lam=2.0).item() == pytest.approx(d_p)


def test_generator_loss_eq12_minimises_r():
    d_fake, kl_r, kl_w, r = torch.tensor([2.0]), torch.tensor(0.4), torch.tensor(0.6), torch.tensor(3.0)
    assert generator_loss(d_fake, kl_r, kl_w, r, alpha=0.5, beta=2.0).item() == pytest.approx(-2 + 0.5 + 6)
    assert generator_loss(d_fake, kl_r, kl_w, r, 0.5, 2.0, kl_halved=True).item() == pytest.approx(-2 + 0.25 + 6)
    fake = torch.zeros(1, 2, requires_grad=True)
    loss = generator_loss(d_fake, kl_r, None, log_odds_regulariser(fake, torch.ones(1, 2), -torch.ones(1, 2), 2.0),
                          0.5, 2.0)
    loss.backward()
    # descending the loss moves the generated embedding toward I_r (+1) -- R is minimised
    assert (fake.grad < 0).all()


def test_triplet_loss_eqs7_9():
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    v_p = F.cosine_similarity(pos, anchor, dim=1)
    v_n = F.cosine_similarity(neg, anchor, dim=1)
    q = torch.exp(v_p) / (torch.exp(v_p) + torch.exp(v_n))                          # eq. 7
    assert triplet_loss(pos, neg, anchor).item() == pytest.approx((-torch.log(q)).mean().item(), rel=1e-6)
    ref = F.softplus(v_n.mean() - v_p.mean()).item()
    assert triplet_loss(pos, neg, anchor, form="batch_mean").item() == pytest.approx(ref, rel=1e-6)


def _model(tiny, **over):
    cfg = make_config("zscrgan", tiny, ("test", {"em_iterations": 6, **over}))
    return build_model("zscrgan", cfg, tiny, seed=3)


def test_shapes_and_alg1_schedule(tiny):
    m = _model(tiny)
    assert m.g(torch.zeros(5, m.cfg.noise_dim), torch.zeros(5, m.cfg.latent_dim)).shape == (5, tiny.image_dim)
    assert m.d(torch.zeros(5, tiny.image_dim), torch.zeros(5, tiny.text_dim)).shape == (5,)
    assert (m.g(torch.randn(5, m.cfg.noise_dim), torch.randn(5, m.cfg.latent_dim)) >= 0).all()   # ReLU output
    calls = {"d": 0, "g": 0, "t": 0}
    for opt, key in ((m.opt_d, "d"), (m.opt_g, "g"), (m.opt_csem, "t")):
        orig = opt.step

        def counted(*a, orig=orig, key=key, **kw):
            calls[key] += 1
            return orig(*a, **kw)
        opt.step = counted
    m.train_round()
    m.train_round()
    m.train_round()
    # iteration it runs it GAN updates (5 critic steps each) then it CSEM updates: 1 + 2 + 3
    assert calls == {"d": 30, "g": 6, "t": 6}
    assert all(p.abs().max() <= m.cfg.clip + 1e-9 for p in m.d.parameters())           # eq. 10


def test_m_step_freezes_generator(tiny):
    m = _model(tiny)
    m.train_round()
    before = {k: v.clone() for k, v in m.g.state_dict().items()}
    csem_before = m.csem.fc.weight.clone()
    m.m_step()
    assert all(torch.equal(before[k], v) for k, v in m.g.state_dict().items())
    assert not torch.equal(csem_before, m.csem.fc.weight)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablations_train_and_evaluate(tiny, ablation):
    m = _model(tiny, ablation=ablation, em_iterations=2)
    losses = m.train_round()
    assert all(math.isfinite(v) for v in losses.values())
    res = m.evaluate("val")
    assert 0.0 <= res["precision@50"] <= 100.0


@pytest.mark.parametrize("over", [{"wrong_class": "similar"}, {"wrong_class": "kmeans"}, {"training": "joint"},
                                  {"variant": "reference", "em_schedule": "fixed", "updates_per_step": 3},
                                  {"query": "captions", "eval_z_samples": 3, "eval_c": "sample"}])
def test_options_run(tiny, over):
    m = _model(tiny, **over)
    m.train_round()
    m.train_round()
    assert math.isfinite(m.evaluate("test")["map@50"])


def test_resume_is_bit_exact(tiny, tmp_path):
    straight = _model(tiny)
    for _ in range(4):
        straight.train_round()
    half = _model(tiny)
    for _ in range(2):
        half.train_round()
    save_checkpoint({"model": half.state_dict()}, tmp_path / "ck.pt")
    resumed = _model(tiny)
    resumed.load_state_dict(load_checkpoint(tmp_path / "ck.pt")["model"])
    for _ in range(2):
        resumed.train_round()
    for name, net in straight.networks().items():
        for (k, a), b in zip(net.state_dict().items(), resumed.networks()[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name}.{k}"
    assert straight.evaluate("test") == resumed.evaluate("test")


def test_divergence_is_raised(tiny):
    m = _model(tiny)
    with torch.no_grad():
        m.g.net[0].weight.fill_(float("nan"))
    with pytest.raises(DivergenceError, match="diverged"):
        m.train_round()


def test_learns_above_chance(tiny):
    cfg = make_config("zscrgan", tiny)          # synthetic-tiny defaults: narrow widths, 30 iterations
    m = build_model("zscrgan", cfg, tiny, seed=0)
    chance = m.chance("test")["precision@50"]
    for _ in range(cfg.em_iterations):
        m.train_round()
    res = m.evaluate("test")
    assert res["precision@50"] > chance + 6.0, (res, chance)


def test_lam_is_inert_under_linear_r_and_a_margin_under_hinge(tiny):
    def g_weights(**over):
        return torch.cat([p.detach().flatten() for p in _train(zscrgan_model(tiny, **over), 2).g.parameters()])
    assert torch.equal(g_weights(lam=0.0), g_weights(lam=5.0))                   # why it is refused
    assert not torch.equal(g_weights(lam=0.0, r_form="hinge"), g_weights(lam=5.0, r_form="hinge"))


# --------------------------------------------------------------------------- E-step / M-step (Alg. 1)
def test_e_step_generator_minimises_the_csem_loss(tiny):
    """Eq. 4: the CSEM term reaches G in the E-step, so the CSEM's learning rate changes G."""
    def g_weights(lr_csem):
        return torch.cat([p.detach().flatten() for p in _train(zscrgan_model(tiny, lr_csem=lr_csem), 3).g.parameters()])
    assert not torch.allclose(g_weights(2e-3), g_weights(2e-2))


def test_e_step_leaves_the_csem_and_m_step_leaves_g_alone(tiny):
    m = zscrgan_model(tiny)
    before = [p.detach().clone() for p in m.csem.parameters()]
    m.e_step()
    assert all(torch.equal(a, b) for a, b in zip(before, m.csem.parameters(), strict=True))
    assert all(p.grad is None for p in m.csem.parameters())     # frozen: no gradient is even computed
    m.opt_g.zero_grad(set_to_none=True)
    m.m_step()
    assert all(p.grad is None for p in m.g.parameters())        # G frozen in the M-step: no graph through G


def test_rmsprop_settings_are_exposed(tiny):
    m = zscrgan_model(tiny, rms_alpha=0.9, rms_eps=1e-10)
    assert m.opt_g.defaults["alpha"] == 0.9 and m.opt_d.defaults["eps"] == 1e-10

