"""ZSCRGAN's training procedure: the E-M rounds of Alg. 1 (E-step: GAN, M-step: CSEM), evaluation (§4.2) and
the checkpoint state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.metrics import retrieval_chance, retrieval_evaluation
from zsexp.models.base import Trainer
from zsexp.models.common import (
    adam_kwargs,
    apply_precision,
    check_eval_split,
    check_finite,
    compile_forward,
    normal_init_,
    optimizer_to,
    read_means,
    restore_rng,
    rng_state,
    train_autocast,
)
from zsexp.models.zscrgan.model import (
    CSEM,
    Discriminator,
    Generator,
    TextEncoder,
    ZSCRGANConfig,
    alg2_query_embedding,
    critic_loss,
    generator_loss,
    kl_standard_normal,
    log_odds_regulariser,
    pool_queries,
    query_inputs,
    reparameterise,
    triplet_loss,
)


class ZSCRGAN(Trainer):
    """A plain object: ``train_round()`` runs one E-M iteration; ``evaluate(split)``; full state dict."""

    family = "zscrgan"

    def __init__(self, cfg: ZSCRGANConfig, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                 fit_split: str = "train"):
        super().__init__(cfg, data, device, seed, fit_split)
        self.iteration = 0
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
        return {**self.state_header(),
                "iteration": self.iteration, "rng": rng_state(self.gen),
                "nets": {k: v.state_dict() for k, v in self.networks().items()},
                "opts": {k: v.state_dict() for k, v in self.optimizers().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_state(state)
        for k, net in self.networks().items():
            net.load_state_dict(state["nets"][k])
        for k, opt in self.optimizers().items():
            opt.load_state_dict(state["opts"][k])
            optimizer_to(opt, self.device)
        self.iteration = int(state["iteration"])
        restore_rng(self.gen, state["rng"], reseed=self.seed * 7919 + self.iteration)
