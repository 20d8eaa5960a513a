"""CM-GAN: each loss against its equation, Alg. 1 steps, class bookkeeping, the ConSE start, resume equality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsexp.data import conse_image_representations, load_dataset
from zsexp.errors import ZsexpError
from zsexp.models import build_model, make_config
from zsexp.models.cmgan import (
    ABLATIONS,
    adversarial_map_loss,
    cycle_loss,
    discriminator_loss,
    supervised_loss,
)
from zsexp.models.common import load_checkpoint, save_checkpoint


def _cmgan(data, fit_split="train", seed=1, **over):
    base = {"iters_per_step": 20, "batch_size": 32, "early_stop": False}
    cfg = make_config("cmgan", data, ("test", {**base, **over}))
    return build_model("cmgan", cfg, data, seed=seed, fit_split=fit_split)


def test_supervised_loss_eq2():
    tv, t, t_neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])
    v, vt, v_neg = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 0.0]])
    c = 1 / math.sqrt(2)
    img_side = max(0.0, 0.5 - c + 0.0)        # γ - cos(T(v), t) + cos(T(v), t⁻)
    txt_side = max(0.0, 0.5 - 1.0 + (-1.0))   # γ - cos(v, V(t)) + cos(v⁻, V(t))
    assert supervised_loss(tv, t, t_neg, v, vt, v_neg, 0.5).item() == pytest.approx(img_side + txt_side, rel=1e-6)


def test_gan_losses_eqs4_5():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    want = -math.log(torch.sigmoid(real).item()) - math.log(1 - torch.sigmoid(fake).item())
    assert discriminator_loss(real, fake).item() == pytest.approx(want, rel=1e-6)
    assert adversarial_map_loss(fake).item() == pytest.approx(-math.log(torch.sigmoid(fake).item()), rel=1e-6)


def test_cycle_loss_eq6_norms():
    t, tc = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    v, vc = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    assert cycle_loss(t, tc, v, vc, "l2").item() == pytest.approx(5.0, rel=1e-5)     # not squared
    assert cycle_loss(t, tc, v, vc, "l2_squared").item() == pytest.approx(25.0)
    assert cycle_loss(t, tc, v, vc, "l1").item() == pytest.approx(7.0)


def _model(data, **over):
    base = {"iters_per_step": 20, "batch_size": 32, "early_stop": False}
    cfg = make_config("cmgan", data, ("test", {**base, **over}))
    return build_model("cmgan", cfg, data, seed=1)


def test_composition_of_maps(tiny):
    m = _model(tiny, max_steps=4)
    v0, t0 = m.v_hat.clone(), m.t_hat.clone()
    m.train_round()          # supervised step: keep T_k, only the image side moves
    assert not torch.allclose(m.v_hat, v0) and torch.equal(m.t_hat, t0)
    with torch.no_grad():
        assert torch.allclose(m.v_hat, m.kept[0][1](v0), atol=1e-6)     # T̂_1 = T_1 ∘ T̂_0
    v1 = m.v_hat.clone()
    m.train_round()          # transductive step: keep V_k, only the label side moves
    assert torch.equal(m.v_hat, v1) and not torch.allclose(m.t_hat, t0)
    assert [side for side, _ in m.kept] == ["T", "V"]


def test_sliced_steps_and_stopping_rule(tiny):
    m = _model(tiny, max_steps=2, slices_per_step=4)
    assert m.total_rounds() == 8
    for _ in range(4):
        m.train_round()
    assert m.step == 1 and len(m.kept) == 1
    while not m.done:
        m.train_round()
    assert m.step == 2
    stopper = _model(tiny, max_steps=6, early_stop=True)
    while not stopper.done:
        stopper.train_round()
    # stopped at K when step K+1 did not improve (or at the maximum K)
    h = stopper.val_history
    assert all(h[i + 1] < h[i] for i in range(len(h) - 1)) and len(h) <= 6


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablations(tiny, ablation):
    m = _model(tiny, ablation=ablation)
    while not m.done:
        losses = m.train_round()
        assert all(math.isfinite(v) for v in losses.values())
    res = m.evaluate("val")
    assert 0 < res["zsl/mfr"] <= 100 and 0 < res["gzsl/mfr"] <= 100


def test_sentence_mode(tiny):
    m = _model(tiny, mode="sentence")
    while not m.done:
        m.train_round()
    res = m.evaluate("test")
    assert set(res) >= {"t2i/mfr", "i2t/mfr", "t2i/fh@1"}
    assert -1 <= m.validation_measure() <= 1


def test_resume_is_bit_exact(tiny, tmp_path):
    straight = _model(tiny, max_steps=4, slices_per_step=2)
    for _ in range(6):
        straight.train_round()
    half = _model(tiny, max_steps=4, slices_per_step=2)
    for _ in range(3):                # stops mid-step on purpose
        half.train_round()
    save_checkpoint({"model": half.state_dict()}, tmp_path / "ck.pt")
    resumed = _model(tiny, max_steps=4, slices_per_step=2)
    resumed.load_state_dict(load_checkpoint(tmp_path / "ck.pt")["model"])
    for _ in range(3):
        resumed.train_round()
    assert torch.equal(straight.v_hat, resumed.v_hat) and torch.equal(straight.t_hat, resumed.t_hat)
    assert straight.evaluate("test") == resumed.evaluate("test")


def test_learns_on_cmgan_shaped_data():
    data = load_dataset("synthetic-imagenet")
    m = _model(data, iters_per_step=100, batch_size=128, lr=1e-3, lr_d=1e-3, max_steps=2, hidden=128, d_hidden=128)
    while not m.done:
        m.train_round()
    res = m.evaluate("test")
    n_unseen = len(data.test_classes)
    assert res["zsl/mfr"] < 25.0                           # random: 50
    assert res["zsl/fh@5"] > 10 * 100.0 * 5 / n_unseen     # chance FH@5 = 5 / K


def test_gzsl_candidates_include_seen(tiny):
    m = _model(tiny)
    scores_z = m.evaluate("test")
    # more candidates can only push the correct rank down
    assert scores_z["gzsl/fh@1"] <= scores_z["zsl/fh@1"] + 1e-9
    assert F.normalize(m.t_hat, dim=1).shape[0] == tiny.n_classes


def test_cmgan_class_positions_and_negatives_with_unsorted_seen_classes(tiny):
    m = _cmgan(tiny, fit_split="trainval")
    seen = torch.as_tensor(m.seen_classes)
    assert not bool((seen[1:] >= seen[:-1]).all())              # train then val: not sorted
    lab = m.labels[torch.as_tensor(m.sup_imgs)]
    assert torch.equal(seen[m.seen_pos[lab]], lab)
    gen = torch.Generator().manual_seed(0)
    pos = m.seen_pos[lab].repeat(20)
    neg = m.sup_table.negatives(pos, gen)
    neg_cls = m.seen_pos[m.labels[neg]]
    assert not bool((neg_cls == pos).any())                    # v⁻ never shares v's class
    counts = torch.bincount(neg_cls, minlength=len(seen)).float()
    assert counts.min() > 0.5 * counts.mean()                   # every other class gets drawn
    vpos = m.seen_pos[m.labels[torch.as_tensor(m.val_imgs)]]
    vneg = m.val_table.negatives(vpos, torch.Generator().manual_seed(1))
    assert not bool((m.seen_pos[m.labels[vneg]] == vpos).any())


def test_cmgan_trainval_evaluation_lists_each_class_once_and_refuses_val(tiny):
    m = _cmgan(tiny, fit_split="trainval")
    m.train_round()
    res = m.evaluate("test", per_image=True)
    n_all = len(np.unique(np.concatenate([tiny.classes("trainval"), tiny.test_classes])))
    assert max(res["gzsl/ranks"]) <= n_all
    with pytest.raises(ZsexpError, match="validation classes"):
        m.evaluate("val")


def test_cmgan_first_step_is_compared_with_the_conse_start(tiny, monkeypatch):
    m = _cmgan(tiny, early_stop=True, max_steps=3)
    assert m.val_start is not None
    monkeypatch.setattr(m, "validation_measure", lambda: m.val_start + 1.0)      # step 1 makes it worse
    m.train_round()
    assert m.done and m.kept == [] and torch.equal(m.v_hat, m.v0)


def test_cmgan_tuning_conse_holds_out_validation_images_and_ignores_shipped_probs(tiny):
    m = _cmgan(tiny)
    want = conse_image_representations(tiny, tiny.train_classes, m.cfg.conse_k, seed=m.seed, exclude=m.val_imgs,
                                       use_shipped=False)
    assert np.allclose(m.v0.numpy(), want)
    shipped = conse_image_representations(tiny, tiny.train_classes, m.cfg.conse_k)
    assert not np.allclose(want, shipped)
    with pytest.warns(UserWarning, match="seen_probs"):
        _cmgan(tiny, fit_split="trainval")

