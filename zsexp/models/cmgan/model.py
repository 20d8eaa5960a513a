"""CM-GAN as the paper writes it: the config (§4.4 defaults), the losses (eqs. 2-6) and the networks (§3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zsexp.config import param
from zsexp.errors import ZsexpError
from zsexp.models.common import (
    PRECISIONS,
)

ABLATIONS = ("full", "conse", "cycle", "gan", "cgan", "sup")


@dataclass
class CMGANConfig:
    mode: str = param("zsl", choices=("zsl", "sentence"), help="ZSL on class labels, or §4.7 sentence matching")
    ablation: str = param("full", choices=ABLATIONS, help="Table 5 ablations")
    gamma: float = param(0.5, low=0.0, high=2.0, help="margin of L_sup (eq. 2)")
    lambda_c: list[float] = param([1.0, 10.0, 1.0], low=0.0, high=1000.0,
                                  help="cycle weight per transductive step (eq. 3)")
    max_steps: int = param(6, low=1, high=100, help="maximum number of alternating steps K")
    early_stop: bool = param(True, help="stop when step k+1 does not improve validation L_sup")
    iters_per_step: int = param(2000, low=1, high=10_000_000, help="optimiser iterations per step")
    slices_per_step: int = param(1, low=1, high=1000, help="rounds a step is cut into (for early stopping)")
    batch_size: int = param(128, low=2, high=1_000_000)
    lr: float = param(1e-4, low=0.0, high=1.0, help="Adam lr of T_k and V_k")
    lr_d: float = param(1e-4, low=0.0, high=1.0, help="Adam lr of D_T and D_V")
    hidden: int = param(500, low=1, high=65536, help="hidden width of T_k and V_k")
    d_hidden: int = param(500, low=1, high=65536, help="hidden width of D_T and D_V")
    map_init: str = param("residual", choices=("residual", "plain"))
    cycle_norm: str = param("l2", choices=("l2", "l2_squared", "l1"))
    conse_k: int = param(10, low=1, high=100000, help="top-K of CONSE (eq. 1)")
    val_fraction: float = param(0.1, low=0.01, high=0.5, help="seen images held out for validation L_sup")
    conse_probs: str = param("auto", choices=("auto", "fit"),
                             help="auto: fit a classifier when tuning, the dataset's seen_probs for the final "
                                  "model; fit: always fit one on the seen training images")
    ks: list[int] = param([1, 2, 5, 10, 20], low=1, high=1_000_000, help="Flat-Hit@k values")
    precision: str = param("fp32", choices=PRECISIONS,
                           help="fp32 (paper); tf32: TF32 matmuls on Ampere+ GPUs; bf16: bfloat16 autocast in training")
    fused_adam: bool = param(False, help="torch's fused Adam kernels for the maps and critics (speed path)")
    compile: bool = param(False, help="torch.compile the current step's maps and critics (speed path)")

    def lambda_for(self, trans_index: int) -> float:
        return self.lambda_c[min(trans_index, len(self.lambda_c) - 1)] if self.lambda_c else 0.0

    def check(self) -> None:
        if self.iters_per_step < self.slices_per_step:
            raise ZsexpError(f"`slices_per_step` ({self.slices_per_step}) must not exceed `iters_per_step` "
                             f"({self.iters_per_step})")


# --------------------------------------------------------------------------- losses (pure functions)
def supervised_loss(tv: torch.Tensor, t: torch.Tensor, t_neg: torch.Tensor,
                    v: torch.Tensor, vt: torch.Tensor, v_neg: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 2: [γ - cos(T(v̂), t̂) + cos(T(v̂), t̂⁻)]_+ + [γ - cos(v̂, V(t̂)) + cos(v̂⁻, V(t̂))]_+.

    ``tv`` = T(v̂), ``vt`` = V(t̂) with t̂ the label of v̂; ``t_neg``/``v_neg`` the negatives.
    """
    img_side = F.relu(gamma - F.cosine_similarity(tv, t, dim=1) + F.cosine_similarity(tv, t_neg, dim=1))
    txt_side = F.relu(gamma - F.cosine_similarity(v, vt, dim=1) + F.cosine_similarity(v_neg, vt, dim=1))
    return (img_side + txt_side).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's side of eqs. 4-5: maximise log D(real) + log(1 - D(fake))."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def adversarial_map_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The map's side of eqs. 4-5, non-saturating: -log D(T(v̂)) (resp. -log D(V(t̂)))."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def cycle_loss(t: torch.Tensor, t_cycled: torch.Tensor, v: torch.Tensor, v_cycled: torch.Tensor,
               norm: str = "l2") -> torch.Tensor:
    """Eq. 6: E_t ||T(V(t̂)) - t̂|| + E_v ||V(T(v̂)) - v̂||, L2 norm not squared by default."""
    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if norm == "l1":
            return (a - b).abs().sum(dim=1)
        sq = (a - b).pow(2).sum(dim=1)
        return sq if norm == "l2_squared" else torch.sqrt(sq + 1e-12)
    return dist(t_cycled, t).mean() + dist(v_cycled, v).mean()


# --------------------------------------------------------------------------- networks
class CrossModalMap(nn.Module):
    """T_k or V_k: a 2-layer perceptron d -> hidden -> d (optionally plus the identity)."""

    def __init__(self, dim: int, hidden: int, residual: bool):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.residual = residual
        if residual:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(F.relu(self.fc1(x)))
        return x + y if self.residual else y


class Critic(nn.Module):
    """D_T or D_V: d -> hidden (LeakyReLU) -> 1 logit."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class _ClassTable:
    """Images of a pool grouped by seen-class position, for drawing an image of *another* class."""

    def __init__(self, table: torch.Tensor, counts: torch.Tensor):
        self.table, self.counts = table, counts
        self.present = torch.nonzero(counts > 0).squeeze(1)           # positions with images in the pool
        self.rank = torch.full((len(counts),), -1, dtype=torch.long, device=counts.device)
        self.rank[self.present] = torch.arange(len(self.present), device=counts.device)

    def to(self, device: torch.device) -> _ClassTable:
        return _ClassTable(self.table.to(device), self.counts.to(device))

    def negatives(self, pos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One image per entry of ``pos`` (class positions), of a uniformly drawn other present class."""
        m = len(self.present)
        if m < 2:
            raise ZsexpError("CM-GAN needs images of at least 2 seen classes in each image pool for negatives")
        r, dev = self.rank[pos], self.table.device
        other = (r.clamp_min(0) + torch.randint(1, m, (len(pos),), generator=gen, device=dev)) % m
        # a class absent from the pool (r = -1) may draw any present class
        other = torch.where(r < 0, torch.randint(0, m, (len(pos),), generator=gen, device=dev), other)
        cls = self.present[other]
        slot = (torch.rand(len(pos), generator=gen, device=dev) * self.counts[cls]).long()
        return self.table[cls, slot]


def _class_table(labels: torch.Tensor, images: torch.Tensor, seen_pos: torch.Tensor, n_seen: int) -> _ClassTable:
    pos = seen_pos[labels]
    counts = torch.bincount(pos, minlength=n_seen)
    table = torch.zeros(n_seen, max(1, int(counts.max())), dtype=torch.long)
    for j in torch.nonzero(counts).squeeze(1).tolist():
        members = images[pos == j]
        table[j, : len(members)] = members
    return _ClassTable(table, counts)


# --------------------------------------------------------------------------- the model
