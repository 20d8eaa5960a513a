"""ZSCRGAN as the paper writes it: the config (§4.3 defaults), the losses (eqs. 9-17), the networks (§3) and
the retrieval of Alg. 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsexp.config import param
from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.models.common import (
    PRECISIONS,
    mlp,
)

ABLATIONS = ("none", "no_wrong", "no_r", "no_triplet", "no_r_triplet", "no_gan")


@dataclass
class ZSCRGANConfig:
    variant: str = param("paper", choices=("paper", "reference"),
                         help="loss forms of the paper or of the authors' code (see module doc)")
    latent_dim: int = param(1024, low=1, high=65536, help="TE output: mu and sigma each (paper: 1024)")
    noise_dim: int = param(256, low=1, high=65536, help="z size (paper: unstated; reference: 256)")
    g_hidden: list[int] = param([2048, 4096], low=1, high=65536, help="generator hidden widths")
    d_hidden: int = param(1024, low=1, high=65536, help="discriminator hidden width")
    leak: float = param(0.2, low=0.0, high=1.0, help="LeakyReLU slope")
    alpha: float = param(0.5, low=0.0, high=100.0, help="weight of the text-encoder divergence (eq. 12)")
    beta: float = param(2.0, low=0.0, high=100.0, help="weight of the log-odds regulariser R (eq. 12)")
    lam: float = param(2.0, low=0.0, high=1e6, help="margin lambda of d_n (eq. 14)")
    r_form: str = param("linear", choices=("linear", "hinge"), help="R as in eq. 15, or hinged at 0")
    em_iterations: int = param(30, low=1, high=100000, help="n of Alg. 1")
    em_schedule: str = param("linear", choices=("linear", "fixed"),
                             help="linear: iteration it runs it updates (Alg. 1); fixed: updates_per_step")
    updates_per_step: int = param(100, low=1, high=1000000, help="GAN/CSEM updates per iteration if fixed")
    d_steps: int = param(5, low=1, high=100, help="critic updates per generator update (Alg. 1 l.4)")
    lr_g: float = param(2e-4, low=0.0, high=1.0, help="RMSprop lr of G and TE")
    lr_d: float = param(2e-4, low=0.0, high=1.0, help="RMSprop lr of D")
    lr_csem: float = param(2e-3, low=0.0, high=1.0, help="Adam lr of the CSEM (beta1 = 0.5)")
    rms_alpha: float = param(0.99, low=0.0, high=1.0,
                             help="RMSprop smoothing (torch default; the authors' TensorFlow: decay 0.9)")
    rms_eps: float = param(1e-8, low=0.0, high=1.0, help="RMSprop epsilon (torch default; authors' code: 1e-10)")
    batch_size: int = param(64, low=1, high=1000000)
    clip: float = param(0.01, low=0.0, high=100.0, help="critic weight clip (eq. 10)")
    wrong_class: str = param("random", choices=("random", "similar", "kmeans"),
                             help="how the wrong class is chosen (§4.5.2, Fig. 3)")
    training: str = param("em", choices=("em", "joint"), help="E-M (Alg. 1) or joint training (Fig. 2)")
    ablation: str = param("none", choices=ABLATIONS, help="Table 8 ablations")
    text_source: str = param("captions", choices=("captions", "class"),
                             help="train on per-image caption embeddings when the dataset has them")
    query: str = param("class", choices=("class", "captions", "documents"),
                       help="query = class text (§4.2), pooled caption queries (reference code), or each "
                            "split document (per-image text) as its own query")
    eval_c: str = param("mean", choices=("mean", "sample"), help="c_hat at test time")
    eval_z_samples: int = param(1, low=1, high=1000, help="z samples averaged per query at test time")
    eval_k: int = param(50, low=1, high=100000, help="K of Precision@K / mAP@K")
    precision: str = param("fp32", choices=PRECISIONS,
                           help="fp32 (paper); tf32: TF32 matmuls on Ampere+ GPUs; bf16: bfloat16 autocast in training")
    fused_adam: bool = param(False, help="torch's fused Adam kernel for the CSEM optimiser (speed path)")
    compile: bool = param(False, help="torch.compile each network's forward (speed path; first round compiles)")

    def check(self) -> None:
        if not self.g_hidden:
            raise ZsexpError("`g_hidden` must list at least one width")

    def updates_in_iteration(self, it: int) -> int:
        return it if self.em_schedule == "linear" else self.updates_per_step


# --------------------------------------------------------------------------- losses (pure functions)
def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor, d_wrong: torch.Tensor | None) -> torch.Tensor:
    """Eq. 11 (= eq. 16 with equal weights): (E D(G) + E D(I_w)) / 2 - E D(I_r); no I_w: CWGAN."""
    if d_wrong is None:
        return d_fake.mean() - d_real.mean()
    return 0.5 * (d_fake.mean() + d_wrong.mean()) - d_real.mean()


def kl_standard_normal(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """Eq. 17 as KL(N(mu, sigma^2) || N(0, I)), averaged over elements (see module doc)."""
    return (-log_sigma + 0.5 * (torch.exp(2.0 * log_sigma) + mu.pow(2) - 1.0)).mean()


def log_odds_regulariser(fake: torch.Tensor, img_r: torch.Tensor, img_w: torch.Tensor | None,
                         lam: float, form: str = "linear") -> torch.Tensor:
    """Eqs. 13-15: R = -log(p / (1 - p)) = d_p - d_n, d_p = |I_r - i|_1, d_n = |I_w - i|_1 - lambda."""
    d_p = (img_r - fake).abs().sum(dim=1)
    if img_w is None:                       # ablation without wrong class: only pull to I_r
        return d_p.mean()
    d_n = (img_w - fake).abs().sum(dim=1) - lam
    r = d_p - d_n
    if form == "hinge":
        r = F.relu(r)
    return r.mean()


def generator_loss(d_fake: torch.Tensor, kl_r: torch.Tensor, kl_w: torch.Tensor | None, r: torch.Tensor | None,
                   alpha: float, beta: float, kl_halved: bool = False) -> torch.Tensor:
    """Eq. 12 with R minimised: -E D(G(z, c_tr), phi_tr) + alpha (KL_r + KL_w) + beta E[R]."""
    kl = kl_r if kl_w is None else kl_r + kl_w
    if kl_halved:
        kl = kl / 2.0
    loss = -d_fake.mean() + alpha * kl
    if r is not None:
        loss = loss + beta * r
    return loss


def triplet_loss(theta_pos: torch.Tensor, theta_neg: torch.Tensor | None, anchor: torch.Tensor,
                 form: str = "per_sample") -> torch.Tensor:
    """Eqs. 7-9: L_T = E log(1 + exp(v_n - v_p)), v_p = cos(CSEM(i), c_tr), v_n = cos(CSEM(G(z, c_tw)), c_tr)."""
    v_p = F.cosine_similarity(theta_pos, anchor, dim=1)
    if theta_neg is None:
        return F.softplus(-v_p).mean()
    v_n = F.cosine_similarity(theta_neg, anchor, dim=1)
    if form == "batch_mean":                # reference code
        return F.softplus(v_n.mean() - v_p.mean())
    return F.softplus(v_n - v_p).mean()


# --------------------------------------------------------------------------- networks
class TextEncoder(nn.Module):
    """phi -> (mu, log sigma): one fully connected layer of 2 x latent_dim outputs (§3.3.3)."""

    def __init__(self, text_dim: int, latent_dim: int):
        super().__init__()
        self.fc = nn.Linear(text_dim, 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(phi)
        return h[:, : self.latent_dim], h[:, self.latent_dim:].clamp(-10.0, 10.0)


def reparameterise(mu: torch.Tensor, log_sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + torch.exp(log_sigma) * eps


class Generator(nn.Module):
    """G(z, c): [z, c] -> hidden (2048, 4096; LeakyReLU) -> image dim, ReLU output (§3.3.3)."""

    def __init__(self, noise_dim: int, latent_dim: int, hidden: list[int], image_dim: int, leak: float):
        super().__init__()
        self.net = mlp([noise_dim + latent_dim, *hidden, image_dim], nn.LeakyReLU(leak), nn.ReLU())

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, c], dim=1))


class Discriminator(nn.Module):
    """D(I, phi): [I, phi] -> 1024 (LeakyReLU) -> 1, linear output (§3.3.3)."""

    def __init__(self, image_dim: int, text_dim: int, hidden: int, leak: float):
        super().__init__()
        self.net = mlp([image_dim + text_dim, hidden, 1], nn.LeakyReLU(leak))

    def forward(self, img: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([img, phi], dim=1)).squeeze(1)


class CSEM(nn.Module):
    """Common Space Embedding Mapper: one layer with ReLU, image space -> latent (common) space."""

    def __init__(self, image_dim: int, latent_dim: int):
        super().__init__()
        self.fc = nn.Linear(image_dim, latent_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(img))


@torch.no_grad()
def alg2_query_embedding(te: TextEncoder, g: Generator | None, csem: CSEM | None, phi: torch.Tensor, *,
                         noise_dim: int, z_samples: int, seed: int, sample_c: bool = False) -> torch.Tensor:
    """theta_t of Alg. 2 l.4-7 for text embeddings phi [Q, Dt]: c_hat = mu (or a sample), i_t = G(z, c_hat),
    theta_t = CSEM(i_t), averaged over ``z_samples`` draws of z.  z comes from a generator seeded with
    10_000 + seed, so the model's evaluate() and the served model rank identically.  ``g`` None: the
    no-GAN ablation (theta_t = mu); ``csem`` None: no trained CSEM (the image space is the common space)."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    mu, ls = te(phi)
    if g is None:
        return mu
    out = 0
    for _ in range(z_samples):
        c = reparameterise(mu, ls, torch.randn(mu.shape, generator=gen).to(phi.device)) if sample_c else mu
        z = torch.randn(phi.shape[0], noise_dim, generator=gen).to(phi.device)
        i_t = g(z, c)                                                      # l.6
        out = out + (csem(i_t) if csem is not None else i_t)               # l.7
    return out / z_samples


def query_inputs(data: ZSLData, split: str, query: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The retrieval queries of a split (shared with the ridge baseline): ``class``: one class text per
    class (§4.2); ``captions``: every document of the split, pooled per class after embedding (reference
    code); ``documents``: every document of the split is its own query (one text per image, as real
    cross-modal sets have).  Returns texts [Q, Dt], their class labels, and whether to pool."""
    classes = data.classes(split)
    if query == "class":
        return torch.as_tensor(data.class_embeddings[classes]), torch.as_tensor(classes), False
    if data.text_features is None:
        raise ZsexpError(f"query={query} needs per-image text (`text_features`) in dataset {data.name!r}")
    idx = data.images(split)
    return torch.as_tensor(data.text_features[idx]), torch.as_tensor(data.labels[idx]), query == "captions"


def pool_queries(theta: torch.Tensor, labels: torch.Tensor, classes: np.ndarray,
                 pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``query=captions``: one query per class, the mean of its documents' embeddings; otherwise as is."""
    if not pool:
        return theta, labels
    lab = labels.to(theta.device)
    return torch.stack([theta[lab == c].mean(0) for c in classes.tolist()]), torch.as_tensor(classes)


# --------------------------------------------------------------------------- the model
