"""ZSCRGAN (Roy et al., CIKM 2020): a conditional WGAN generating per-class representative
embeddings, a Common Space Embedding Mapper (CSEM), trained alternately by E-M (Alg. 1), and
text-to-image retrieval by Alg. 2.

Code (paper): ``te`` (Text Encoder TE, phi -> N(mu, Sigma)), ``gen`` (G(z, c)), ``disc``
(D(I, phi)), ``csem`` (CSEM, psi_C); ``c_r``/``c_w`` (c_tr / c_tw), ``phi_r``/``phi_w``
(phi_tr / phi_tw), ``img_r``/``img_w`` (I_r / I_w), ``fake_r``/``fake_w`` (i_r / i_w).

Choices where the paper is loose (documented, each switchable):

* **The regulariser sign (eq. 12).**  Eq. 12 writes ``beta * -E[R]`` while R = -log-odds =
  d_p - d_n (eqs. 13-15) must be *minimised* for the generated embedding to approach I_r and
  leave I_w.  We minimise ``+beta * E[R]``, as the reference code does
  (``|G - I_r| - |G - I_w| + 2`` added to the generator loss).
* **Distances and margin.**  d_p, d_n are Manhattan distances summed over the image dimensions
  (reference: ``reduce_sum(abs(.), axis=1)``), averaged over the batch.  With the linear form of
  eq. 15 the margin lambda only shifts R by a constant and does not change any gradient (the
  reference adds a constant 2.0); ``r_form="hinge"`` uses ``max(0, d_p - d_n)`` with
  d_n = |I_w - i| - lambda, where lambda does act as the margin the text describes.
* **"JS divergence" of the text encoder (eqs. 12, 17).**  JS between Gaussians has no closed form;
  the conditioning-augmentation design it comes from (and the reference ``KL_loss``) uses
  KL(N(mu, sigma^2) || N(0, I)) = -log sigma + (sigma^2 + mu^2 - 1) / 2, averaged over
  elements.  The paper variant adds it for c_tr and c_tw (``alpha * (KL_r + KL_w)``); the
  reference variant halves the sum.
* **Critic loss (eqs. 11, 16).**  Eq. 16 read literally weighs the fake terms twice as much as
  eq. 11; we use eq. 11 = ``(E D(G) + E D(I_w)) / 2 - E D(I_r)`` (both sources get equal weight,
  as the text says; same as the reference).  The Lipschitz constraint of eq. 10 is weight
  clipping of every critic parameter to ``[-clip, clip]`` after each critic step (0.01, WGAN's
  and the reference's value).
* **CSEM loss (eqs. 7-9, Alg. 1 l.11-14).**  i = G(z, c_tr) and G(z', c_tw) are both generated:
  the CSEM never sees a real image in training.  Paper: the mean over the batch of
  softplus(v_n - v_p); reference: softplus(mean v_n - mean v_p).
* **E-step objective (eq. 4).**  The E-step maximises F(P, psi_C), whose CSEM term is -L_T, so the
  generator (and TE) also minimise L_T with the CSEM frozen: eq. 12 + L_T, in both variants (the
  reference code does the same).  The CSEM moves only in the M-step (Alg. 1 l.10-15) -- that is
  what separates E-M from ``training="joint"`` (Fig. 2), where one step updates both.  The M-step
  runs G without gradients (G is frozen there).
* **Optimisers.**  RMSprop for G/TE and D with torch's defaults (``rms_alpha`` 0.99, ``rms_eps``
  1e-8); the authors' TensorFlow used decay 0.9 and epsilon 1e-10 (set those keys to match it).
* **Test time (Alg. 2).**  c_hat = mu(phi_t) (``eval_c="mean"``) or a sample; z ~ N(0, I);
  with ``eval_z_samples > 1`` the CSEM outputs of several z are averaged.  Evaluation draws
  from its own fixed-seed generator, so it neither depends on nor disturbs training state.
* **Ablations (Table 8).**  ``no_wrong``: no wrong class anywhere (critic without I_w, R = d_p,
  no KL on c_tw, CSEM loss softplus(-v_p)); ``no_r``: beta = 0; ``no_triplet``: no M-step, and
  with no trained CSEM retrieval compares G's output with the images in the image space;
  ``no_r_triplet``: both; ``no_gan``: no G and D -- the representative embedding is replaced by
  the real image: the CSEM (with the TE, since nothing else trains it) learns the triplet loss
  on real I_r / I_w, and the query is the text latent mu(phi_t) itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsexp.config import param
from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.metrics import retrieval_chance, retrieval_evaluation
from zsexp.models.common import (
    PRECISIONS,
    AblationRow,
    AblationTable,
    adam_kwargs,
    apply_precision,
    check_eval_split,
    check_finite,
    compile_forward,
    device_generator,
    mlp,
    normal_init_,
    optimizer_to,
    read_means,
    restore_rng,
    rng_state,
    train_autocast,
)

ABLATIONS = ("none", "no_wrong", "no_r", "no_triplet", "no_r_triplet", "no_gan")


def _p50(cub: float, flowers: float) -> dict[str, dict[str, float]]:
    return {"precision@50": {"CUB": cub, "Flowers": flowers}}


# Table 8 (§4.7): Prec@50 on CUB and Flowers, rows in the paper's order, the complete model first
TABLE8 = AblationTable(
    title="ZSCRGAN Table 8 (ablation analysis)",
    rows=(AblationRow("Complete model", {"ablation": "none"}, _p50(51.7, 57.6)),
          AblationRow("w/o wrong class embedding", {"ablation": "no_wrong"}, _p50(24.7, 27.2)),
          AblationRow("w/o R and triplet loss", {"ablation": "no_r_triplet"}, _p50(23.8, 33.7)),
          AblationRow("w/o triplet loss", {"ablation": "no_triplet"}, _p50(36.2, 41.4)),
          AblationRow("w/o R", {"ablation": "no_r"}, _p50(48.4, 35.2)),
          AblationRow("w/o GAN", {"ablation": "no_gan"}, _p50(25.9, 32.0))),
    metrics=("precision@50", "map@50", "top1"),
    # E-M vs joint training (Fig. 2) and the wrong-class strategies (Fig. 3) are named variants
    variant_keys=("ablation", "training", "wrong_class"),
    source="Table 8: Prec@50 (%) on CUB and Flowers")


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
class ZSCRGAN:
    """A plain object: ``train_round()`` runs one E-M iteration; ``evaluate(split)``; full state dict."""

    family = "zscrgan"

    def __init__(self, cfg: ZSCRGANConfig, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                 fit_split: str = "train"):
        self.cfg, self.data, self.device, self.seed = cfg, data, torch.device(device), seed
        self.fit_split = fit_split
        self.iteration = 0
        self.gen = device_generator(self.device, seed)      # all training randomness, on the model's device
        torch.manual_seed(seed)                              # only used for network init below
        dv, dt, lat = data.image_dim, data.text_dim, cfg.latent_dim
        self._prepare_data()
        self.te = TextEncoder(dt, lat).to(self.device)
        self.csem = CSEM(dv, lat).to(self.device)
        self.use_gan = cfg.ablation != "no_gan"
        self.use_triplet = cfg.ablation not in ("no_triplet", "no_r_triplet")
        self.use_r = cfg.ablation not in ("no_r", "no_r_triplet") and cfg.beta > 0
        self.use_wrong = cfg.ablation != "no_wrong"
        if self.use_gan:
            self.g = Generator(cfg.noise_dim, lat, cfg.g_hidden, dv, cfg.leak).to(self.device)
            self.d = Discriminator(dv, dt, cfg.d_hidden, cfg.leak).to(self.device)
            normal_init_(self.g)
            normal_init_(self.d)
            rms = {"alpha": cfg.rms_alpha, "eps": cfg.rms_eps, "foreach": True}
            self.opt_g = torch.optim.RMSprop([*self.g.parameters(), *self.te.parameters()], lr=cfg.lr_g, **rms)
            self.opt_d = torch.optim.RMSprop(self.d.parameters(), lr=cfg.lr_d, **rms)
            csem_params = list(self.csem.parameters())
        else:
            csem_params = [*self.csem.parameters(), *self.te.parameters()]
        self.opt_csem = torch.optim.Adam(csem_params, lr=cfg.lr_csem, betas=(0.5, 0.999), **adam_kwargs(cfg.fused_adam))
        apply_precision(cfg.precision, self.device)
        if cfg.compile:
            compile_forward(list(self.networks().values()))

    # ------------------------------------------------------------------ data
    def _prepare_data(self) -> None:
        data, cfg = self.data, self.cfg
        idx = data.images(self.fit_split)
        classes = data.classes(self.fit_split)
        if len(classes) < 2 and cfg.ablation != "no_wrong":
            raise ZsexpError(f"ZSCRGAN needs at least 2 seen classes for wrong classes, got {len(classes)}")
        pos = {c: j for j, c in enumerate(classes.tolist())}
        self.n_seen = len(classes)
        dev = self.device
        self.img = torch.as_tensor(data.features[idx], device=dev)
        self.cls = torch.as_tensor([pos[c] for c in data.labels[idx].tolist()], dtype=torch.long, device=dev)
        class_text = torch.as_tensor(data.class_embeddings[classes])
        if cfg.text_source == "captions" and data.text_features is not None:
            self.phi = torch.as_tensor(data.text_features[idx], device=dev)
        else:
            self.phi = class_text.to(dev)[self.cls]
        # per seen class: padded image index table for sampling a wrong image of a class
        cls = self.cls.cpu()
        counts = torch.bincount(cls, minlength=self.n_seen)
        table = torch.zeros(self.n_seen, int(counts.max()), dtype=torch.long)
        for j in range(self.n_seen):
            members = torch.nonzero(cls == j).squeeze(1)
            table[j, : members.numel()] = members
        self.class_table, self.class_counts = table.to(dev), counts.to(dev)     # index tables on the device
        self.partner = self._fixed_wrong_partner(class_text).to(dev) if cfg.wrong_class != "random" else None

    def _fixed_wrong_partner(self, class_text: torch.Tensor) -> torch.Tensor:
        """§4.5.2 alternatives: most text-similar class, or K-means co-occurrence partner."""
        if self.cfg.wrong_class == "similar":
            sim = F.normalize(class_text, dim=1) @ F.normalize(class_text, dim=1).T
            sim.fill_diagonal_(-float("inf"))
            return sim.argmax(dim=1)
        # K-means (k = number of seen classes, Lloyd iterations) on the training images
        x = self.img.cpu()
        k = self.n_seen
        g = torch.Generator().manual_seed(self.seed + 7)
        centres = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
        for _ in range(25):
            assign = torch.cdist(x, centres).argmin(dim=1)
            for j in range(k):
                members = x[assign == j]
                if members.numel():
                    centres[j] = members.mean(0)
        hist = torch.zeros(self.n_seen, k)
        hist.index_put_((self.cls.cpu(), assign), torch.ones(len(assign)), accumulate=True)
        co = hist @ hist.T                   # images of class a and b sharing clusters
        co.fill_diagonal_(-1.0)
        return co.argmax(dim=1)

    def _batch(self) -> dict[str, torch.Tensor]:
        n, b = self.img.shape[0], self.cfg.batch_size
        g, dev = self.gen, self.device          # everything drawn and indexed on the device
        i_r = torch.randint(0, n, (b,), generator=g, device=dev)
        y = self.cls[i_r]
        if self.partner is None:    # uniformly from the *other* seen classes
            y_w = (y + torch.randint(1, self.n_seen, (b,), generator=g, device=dev)) % self.n_seen
        else:
            y_w = self.partner[y]
        slot = (torch.rand(b, generator=g, device=dev) * self.class_counts[y_w]).long()
        i_w = self.class_table[y_w, slot]
        lat, nz = self.cfg.latent_dim, self.cfg.noise_dim
        return {"img_r": self.img[i_r], "phi_r": self.phi[i_r], "img_w": self.img[i_w], "phi_w": self.phi[i_w],
                "eps_r": torch.randn(b, lat, generator=g, device=dev),
                "eps_w": torch.randn(b, lat, generator=g, device=dev),
                "z": torch.randn(b, nz, generator=g, device=dev),
                "z_w": torch.randn(b, nz, generator=g, device=dev)}

    # ------------------------------------------------------------------ training steps
    def _csem_loss(self, bt: dict, c_r: torch.Tensor, c_w: torch.Tensor, g_grad: bool = True) -> torch.Tensor:
        """L_T (eqs. 7-9).  ``g_grad=False`` (M-step): G is frozen, so its forward pass keeps no graph."""
        form = "batch_mean" if self.cfg.variant == "reference" else "per_sample"
        if not self.use_gan:      # ablation: real image embeddings instead of generated ones
            pos, neg = self.csem(bt["img_r"]), self.csem(bt["img_w"])
        else:
            with torch.set_grad_enabled(g_grad and torch.is_grad_enabled()):
                i_r = self.g(bt["z"], c_r)                              # i_r = G(z, c_tr)  (Alg. 1 l.13)
                i_w = self.g(bt["z_w"], c_w) if self.use_wrong else None  # i_w = G(z', c_tw)
            pos = self.csem(i_r)
            neg = self.csem(i_w) if i_w is not None else None
        return triplet_loss(pos, neg, c_r, form)

    def _critic_steps(self, n_steps: int) -> list[torch.Tensor]:
        """``n_steps`` critic updates (Alg. 1 l.4-6).  G and TE do not change during them, so the
        fakes of all steps come from one batched forward pass; real, fake and wrong embeddings then
        go through D in one call per step.  Both are the same maths as step-by-step calls."""
        batches = [self._batch() for _ in range(n_steps)]
        with torch.no_grad():
            phi = torch.cat([bt["phi_r"] for bt in batches])
            mu, ls = self.te(phi)
            c = reparameterise(mu, ls, torch.cat([bt["eps_r"] for bt in batches]))
            fakes = self.g(torch.cat([bt["z"] for bt in batches]), c).split(self.cfg.batch_size)
        losses = []
        for bt, fake in zip(batches, fakes, strict=True):
            imgs = [bt["img_r"], fake] + ([bt["img_w"]] if self.use_wrong else [])
            scores = self.d(torch.cat(imgs), bt["phi_r"].repeat(len(imgs), 1)).split(bt["img_r"].shape[0])
            loss = critic_loss(scores[0], scores[1], scores[2] if self.use_wrong else None)    # eq. 11
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
            with torch.no_grad():                                      # eq. 10: ||D_w|| <= k
                torch._foreach_clamp_min_(list(self.d.parameters()), -self.cfg.clip)
                torch._foreach_clamp_max_(list(self.d.parameters()), self.cfg.clip)
            losses.append(loss.detach())             # stays on the device until the round ends
        return losses

    def e_step(self) -> dict[str, torch.Tensor]:
        """One generator update of the E-step (Alg. 1 l.7): G (and TE) move; the CSEM is frozen under E-M."""
        cfg, bt = self.cfg, self._batch()
        mu, ls = self.te(torch.cat([bt["phi_r"], bt["phi_w"]]))
        (mu_r, mu_w), (ls_r, ls_w) = mu.chunk(2), ls.chunk(2)
        c_r = reparameterise(mu_r, ls_r, bt["eps_r"])
        c_w = reparameterise(mu_w, ls_w, bt["eps_w"])
        fake = self.g(bt["z"], c_r)
        self.d.requires_grad_(False)          # D only passes gradients through here; no weight grads
        kl_r = kl_standard_normal(mu_r, ls_r)
        kl_w = kl_standard_normal(mu_w, ls_w) if self.use_wrong else None
        r = (log_odds_regulariser(fake, bt["img_r"], bt["img_w"] if self.use_wrong else None, cfg.lam, cfg.r_form)
             if self.use_r else None)
        loss = generator_loss(self.d(fake, bt["phi_r"]), kl_r, kl_w, r, cfg.alpha, cfg.beta,
                              kl_halved=cfg.variant == "reference")                    # eq. 12
        out = {"loss_g": loss.detach(), "kl": kl_r.detach(),
               "r": r.detach() if r is not None else torch.zeros((), device=loss.device)}
        joint = cfg.training == "joint" and self.use_triplet
        if self.use_triplet:          # eq. 4: the E-step maximises F(P, psi_C) = ... - L_T, CSEM frozen
            self.csem.requires_grad_(joint)
            l_t = self._csem_loss(bt, c_r, c_w)
            loss = loss + l_t
            out["loss_t_g"] = l_t.detach()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_csem.zero_grad(set_to_none=True)
        loss.backward()
        self.d.requires_grad_(True)
        self.csem.requires_grad_(True)
        self.opt_g.step()
        if joint:                     # Fig. 2 "joint": CSEM updated together with G
            self.opt_csem.step()
        return out

    def m_step(self) -> torch.Tensor:
        """M-step update (Alg. 1 l.11-14): G and TE frozen, only psi_C moves (no_gan: TE too)."""
        bt = self._batch()
        if self.use_gan:
            with torch.no_grad():
                mu_r, ls_r = self.te(bt["phi_r"])
                mu_w, ls_w = self.te(bt["phi_w"])
                c_r = reparameterise(mu_r, ls_r, bt["eps_r"])
                c_w = reparameterise(mu_w, ls_w, bt["eps_w"])
            loss = self._csem_loss(bt, c_r, c_w, g_grad=False)             # G frozen (Alg. 1 l.11)
        else:
            mu_r, ls_r = self.te(bt["phi_r"])
            c_r = reparameterise(mu_r, ls_r, bt["eps_r"])
            loss = self._csem_loss(bt, c_r, c_r) + self.cfg.alpha * kl_standard_normal(mu_r, ls_r)
        self.opt_csem.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_csem.step()
        return loss.detach()

    def train_round(self) -> dict[str, float]:
        """One E-M iteration of Alg. 1 (it = iteration + 1)."""
        it = self.iteration + 1
        n = self.cfg.updates_in_iteration(it)
        self._train_mode(True)
        d_losses, g_losses, t_losses = [], [], []
        with train_autocast(self.cfg.precision, self.device):
            if self.use_gan:
                for _ in range(n):                                        # Alg. 1 l.3: E-step, train GAN
                    d_losses.extend(self._critic_steps(self.cfg.d_steps))  # l.4-6
                    g_losses.append(self.e_step())                         # l.7
            if self.use_triplet and (self.cfg.training == "em" or not self.use_gan):
                for _ in range(n):                                        # l.10-15: M-step, train CSEM
                    t_losses.append(self.m_step())
        self.iteration = it
        logs = {"loss_d": d_losses, "loss_t": t_losses}
        for key in g_losses[0] if g_losses else ():
            logs[key] = [g[key] for g in g_losses if key in g]
        out: dict[str, float] = {"updates": float(n), **read_means(logs)}      # the round's one host read
        check_finite(out, f"ZSCRGAN iteration {it}")
        return out

    def _train_mode(self, flag: bool) -> None:
        for net in self.networks().values():
            net.train(flag)

    # ------------------------------------------------------------------ retrieval (Alg. 2)
    @torch.no_grad()
    def embed_queries(self, phi: torch.Tensor) -> torch.Tensor:
        """theta_t for text embeddings phi [Q, Dt] (Alg. 2 l.4-7)."""
        self._train_mode(False)
        return alg2_query_embedding(self.te, self.g if self.use_gan else None,
                                    self.csem if self.use_triplet else None, phi.to(self.device),
                                    noise_dim=self.cfg.noise_dim, z_samples=self.cfg.eval_z_samples,
                                    seed=self.seed, sample_c=self.cfg.eval_c == "sample")

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """theta_i = CSEM(I_i) (Alg. 2 l.11)."""
        self._train_mode(False)
        images = images.to(self.device)
        return self.csem(images) if self.use_triplet else images

    def _query_inputs(self, split: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Query texts, their class labels, and whether to pool them per class (``query=captions``)."""
        return query_inputs(self.data, split, self.cfg.query)

    def _queries(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        phi, labels, pool = self._query_inputs(split)
        return pool_queries(self.embed_queries(phi), labels, self.data.classes(split), pool)

    def evaluate(self, split: str = "val", per_query: bool = False) -> dict[str, Any]:
        """P@K, mAP@K, mAP (full ranking), Top-1 (%) with the split's queries over its images (§4.2, Alg. 2),
        plus the number of degenerate (all-zero) query / image embeddings."""
        check_eval_split(split, self.fit_split)
        theta_t, q_labels = self._queries(split)
        idx = self.data.images(split)
        theta_i = self.embed_images(torch.as_tensor(self.data.features[idx]))
        return retrieval_evaluation(theta_t, q_labels, theta_i, torch.as_tensor(self.data.labels[idx]),
                                    k=self.cfg.eval_k, per_query=per_query)

    def chance(self, split: str = "val") -> dict[str, float]:
        """Expected P@K of a random ranking for this split's queries."""
        _, labels, pool = self._query_inputs(split)
        q = self.data.classes(split) if pool else labels
        return retrieval_chance(self.data.labels[self.data.images(split)], q, self.cfg.eval_k)

    # ------------------------------------------------------------------ state
    def networks(self) -> dict[str, nn.Module]:
        nets = {"te": self.te, "csem": self.csem}
        if self.use_gan:
            nets.update(g=self.g, d=self.d)
        return nets

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"csem": self.opt_csem}
        if self.use_gan:
            opts.update(g=self.opt_g, d=self.opt_d)
        return opts

    def state_dict(self) -> dict[str, Any]:
        return {"family": self.family, "config": asdict(self.cfg), "seed": self.seed, "fit_split": self.fit_split,
                "iteration": self.iteration, "rng": rng_state(self.gen),
                "nets": {k: v.state_dict() for k, v in self.networks().items()},
                "opts": {k: v.state_dict() for k, v in self.optimizers().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("family") != self.family:
            raise ZsexpError(f"checkpoint is for model {state.get('family')!r}, not {self.family!r}")
        for k, net in self.networks().items():
            net.load_state_dict(state["nets"][k])
        for k, opt in self.optimizers().items():
            opt.load_state_dict(state["opts"][k])
            optimizer_to(opt, self.device)
        self.iteration = int(state["iteration"])
        restore_rng(self.gen, state["rng"], reseed=self.seed * 7919 + self.iteration)
