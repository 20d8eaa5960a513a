"""CM-GAN's training procedure (§3.4): alternating supervised and transductive steps, the stopping rule,
evaluation (§4.2) and the checkpoint state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zsexp.data.conse import conse_image_representations
from zsexp.data.schema import ZSLData
from zsexp.errors import ZsexpError
from zsexp.metrics import zsl_chance, zsl_metrics_from_ranks, zsl_ranks_from_embeddings
from zsexp.models.base import Trainer
from zsexp.models.cmgan.model import (
    CMGANConfig,
    Critic,
    CrossModalMap,
    _class_table,
    adversarial_map_loss,
    cycle_loss,
    discriminator_loss,
    supervised_loss,
)
from zsexp.models.common import (
    adam_kwargs,
    apply_precision,
    check_finite,
    compile_forward,
    optimizer_to,
    read_means,
    restore_rng,
    rng_state,
    train_autocast,
    zsl_candidates,
    zsl_chance_of,
    zsl_evaluation,
)


class CMGAN(Trainer):
    """A plain object: ``train_round()`` runs one step (or one slice of it); ``evaluate(split)``."""

    family = "cmgan"

    def __init__(self, cfg: CMGANConfig, data: ZSLData, device: torch.device | str = "cpu", seed: int = 0,
                 fit_split: str = "train"):
        super().__init__(cfg, data, device, seed, fit_split)
        apply_precision(cfg.precision, self.device)
        torch.manual_seed(seed)
        self.step = 0                 # completed steps
        self.iter_in_step = 0
        self.done = cfg.ablation == "conse"
        self.kept: list[tuple[str, nn.Module]] = []     # ("T" | "V", map) of completed steps
        self.val_history: list[float] = []
        self._prepare_data()
        self._new_step()

    # ------------------------------------------------------------------ data
    def _prepare_data(self) -> None:
        d, cfg, dev = self.data, self.cfg, self.device
        seen = d.classes(self.fit_split)
        self.seen_classes = seen
        self.unseen_classes = d.val_classes if self.fit_split == "train" else d.test_classes
        if cfg.mode == "sentence":
            if d.text_features is None:
                raise ZsexpError("CM-GAN sentence mode needs per-image text (text_features) in the dataset")
            self.t0 = torch.as_tensor(d.text_features, device=dev)          # one sentence per image
        else:
            self.t0 = torch.as_tensor(d.class_embeddings, device=dev)       # T0: label embeddings
        if cfg.conse_k > len(seen):
            raise ZsexpError(f"`conse_k` ({cfg.conse_k}) exceeds the number of seen classes ({len(seen)})")
        # images for the supervised step, with a held-out part for validation L_sup
        fit_imgs = d.images(self.fit_split)
        perm = torch.randperm(len(fit_imgs), generator=torch.Generator().manual_seed(self.seed + 1)).numpy()
        n_val = max(1, int(round(self.cfg.val_fraction * len(fit_imgs))))
        self.val_imgs = np.sort(fit_imgs[perm[:n_val]])
        self.sup_imgs = np.sort(fit_imgs[perm[n_val:]])
        use_shipped = cfg.conse_probs == "auto" and self.fit_split == "trainval"
        v0 = conse_image_representations(d, seen, cfg.conse_k, seed=self.seed, exclude=self.val_imgs,
                                         use_shipped=use_shipped)                       # eq. 1
        self.v0 = torch.as_tensor(v0, device=dev)
        unseen_split = "val" if self.fit_split == "train" else "test"
        self.unseen_imgs = d.images(unseen_split)
        self.labels = torch.as_tensor(d.labels)
        # class id -> position among the seen classes (-1: not seen); seen is not sorted for trainval
        self.seen_pos = torch.full((d.n_classes,), -1, dtype=torch.long)
        self.seen_pos[torch.as_tensor(seen)] = torch.arange(len(seen))
        self.sup_table = _class_table(self.labels[torch.as_tensor(self.sup_imgs)], torch.as_tensor(self.sup_imgs),
                                      self.seen_pos, len(seen))
        self.val_table = _class_table(self.labels[torch.as_tensor(self.val_imgs)], torch.as_tensor(self.val_imgs),
                                      self.seen_pos, len(seen))
        # the training loop's index pools and tables, on the device (no per-batch host-to-device copies)
        self.dev_pools = {"sup": torch.as_tensor(self.sup_imgs, device=dev),
                          "unseen_imgs": torch.as_tensor(self.unseen_imgs, device=dev),
                          "unseen_classes": torch.as_tensor(self.unseen_classes, device=dev)}
        self.dev_labels, self.dev_seen_pos = self.labels.to(dev), self.seen_pos.to(dev)
        self.dev_seen = torch.as_tensor(seen, device=dev)
        self.dev_sup_table = self.sup_table.to(dev)
        self.v_hat = self.v0.clone()
        self.t_hat = self.t0.clone()
        self.val_start = self.validation_measure() if cfg.mode == "zsl" else None   # the CONSE start

    # ------------------------------------------------------------------ step structure
    def _step_kind(self, k: int) -> str:
        """Kind of step k (0-based): 'sup' or 'trans'."""
        if self.cfg.mode == "sentence":
            return "trans"
        ab = self.cfg.ablation
        if ab == "sup":
            return "sup"
        if ab in ("cycle", "gan", "cgan"):
            return "trans"
        return "sup" if k % 2 == 0 else "trans"

    def _max_steps(self) -> int:
        if self.cfg.ablation == "conse":
            return 0
        if self.cfg.mode == "sentence" or self.cfg.ablation != "full":
            return 1
        return self.cfg.max_steps

    def total_rounds(self) -> int:
        return self._max_steps() * self.cfg.slices_per_step

    def _new_step(self) -> None:
        """Fresh T_k, V_k, D_T, D_V, initialised from (seed, k) so that a resumed run matches."""
        dim, cfg, dev = self.t0.shape[1], self.cfg, self.device
        res = cfg.map_init == "residual"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1009 + self.step)
            self.t_map = CrossModalMap(dim, cfg.hidden, res).to(dev)
            self.v_map = CrossModalMap(dim, cfg.hidden, res).to(dev)
            self.d_t = Critic(dim, cfg.d_hidden).to(dev)
            self.d_v = Critic(dim, cfg.d_hidden).to(dev)
        if cfg.compile:
            compile_forward([self.t_map, self.v_map, self.d_t, self.d_v])
        fused = adam_kwargs(cfg.fused_adam)
        self.opt_maps = torch.optim.Adam([*self.t_map.parameters(), *self.v_map.parameters()], lr=cfg.lr,
                                         betas=(0.5, 0.999), **fused)
        self.opt_d = torch.optim.Adam([*self.d_t.parameters(), *self.d_v.parameters()], lr=cfg.lr_d,
                                      betas=(0.5, 0.999), **fused)
        self.iter_in_step = 0

    def _trans_index(self, k: int) -> int:
        return sum(1 for j in range(k) if self._step_kind(j) == "trans")

    # ------------------------------------------------------------------ one optimiser iteration
    def _sample(self, pool: torch.Tensor, n: int) -> torch.Tensor:
        return pool[torch.randint(0, len(pool), (n,), generator=self.gen, device=pool.device)]

    def _sup_iteration(self) -> dict[str, torch.Tensor]:
        b, dev = self.cfg.batch_size, self.device
        idx = self._sample(self.dev_pools["sup"], b)
        lab = self.dev_labels[idx]
        seen = self.dev_seen
        pos = self.dev_seen_pos[lab]
        t_neg_cls = seen[(pos + torch.randint(1, len(seen), (b,), generator=self.gen, device=dev)) % len(seen)]  # t⁻
        v_neg = self.dev_sup_table.negatives(pos, self.gen)                                          # v⁻
        v, t = self.v_hat[idx], self.t_hat[lab]
        loss = supervised_loss(self.t_map(v), t, self.t_hat[t_neg_cls], v, self.v_map(t),
                               self.v_hat[v_neg], self.cfg.gamma)                     # eq. 2
        self.opt_maps.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_maps.step()
        return {"loss_sup": loss.detach()}                   # read back once per round (read_means)

    def _trans_iteration(self, lam: float) -> dict[str, torch.Tensor]:
        b, dev, ab = self.cfg.batch_size, self.device, self.cfg.ablation
        if self.cfg.mode == "sentence":   # the fit images and their captions, drawn independently (unpaired)
            v_pool = t_pool = self.dev_pools["sup"]
        else:
            v_pool, t_pool = self.dev_pools["unseen_imgs"], self.dev_pools["unseen_classes"]
        v = self.v_hat[self._sample(v_pool, b)]                     # v ∈ U_V (unlabelled)
        t = self.t_hat[self._sample(t_pool, b)]                     # t ∈ U_T, drawn independently
        use_gan = ab in ("full", "gan", "cgan") or self.cfg.mode == "sentence"
        use_cycle = ab in ("full", "cycle", "cgan") or self.cfg.mode == "sentence"
        out = {}
        if use_gan:                                                  # discriminators ascend eqs. 4-5
            with torch.no_grad():
                tv, vt = self.t_map(v), self.v_map(t)
            loss_d = discriminator_loss(self.d_t(t), self.d_t(tv)) + discriminator_loss(self.d_v(v), self.d_v(vt))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            out["loss_d"] = loss_d.detach()
        tv, vt = self.t_map(v), self.v_map(t)
        loss = torch.zeros((), device=dev)
        if use_gan:
            l_gan = adversarial_map_loss(self.d_t(tv)) + adversarial_map_loss(self.d_v(vt))   # L^v_gan + L^t_gan
            loss = loss + l_gan
            out["loss_gan"] = l_gan.detach()
        if use_cycle:
            l_c = cycle_loss(t, self.t_map(vt), v, self.v_map(tv), self.cfg.cycle_norm)       # eq. 6
            loss = loss + (lam if use_gan else 1.0) * l_c                                      # eq. 3
            out["loss_cycle"] = l_c.detach()
        self.opt_maps.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_maps.step()
        return out

    # ------------------------------------------------------------------ rounds and steps
    def train_round(self) -> dict[str, float]:
        """One slice of the current step; at a step's end, freeze it and apply the stopping rule."""
        if self.done:
            return {"step": float(self.step), "done": 1.0}
        k = self.step
        kind = self._step_kind(k)
        lam = self.cfg.lambda_for(self._trans_index(k))
        n_slices = self.cfg.slices_per_step
        per_slice = self.cfg.iters_per_step // n_slices
        slice_idx = self.iter_in_step // max(1, per_slice)
        n_iter = per_slice if slice_idx < n_slices - 1 else self.cfg.iters_per_step - self.iter_in_step
        logs: list[dict[str, torch.Tensor]] = []
        with train_autocast(self.cfg.precision, self.device):
            for _ in range(n_iter):
                logs.append(self._sup_iteration() if kind == "sup" else self._trans_iteration(lam))
        self.iter_in_step += n_iter
        out = read_means({key: [log[key] for log in logs if key in log] for key in logs[0]}) if logs else {}
        check_finite(out, f"CM-GAN step {k + 1} ({kind})")
        out.update(step=float(k + 1), kind_sup=1.0 if kind == "sup" else 0.0, updates=float(n_iter))
        if self.iter_in_step >= self.cfg.iters_per_step:
            out.update(self._finish_step(kind))
        return out

    def _finish_step(self, kind: str) -> dict[str, float]:
        kept_map = self.t_map if kind == "sup" else self.v_map
        side = "T" if kind == "sup" else "V"
        before = (self.v_hat.clone(), self.t_hat.clone())
        self._apply(side, kept_map)
        val = self.validation_measure()
        previous = self.val_history[-1] if self.val_history else self.val_start      # step 1: vs CONSE
        improved = previous is None or self._better(val, previous)
        if self.cfg.early_stop and not improved and self.cfg.mode == "zsl":
            self.v_hat, self.t_hat = before                             # discard step k+1 (§3.4 Outcome)
            self.done = True
            return {"val_measure": val, "stopped_early": 1.0}
        self.kept.append((side, kept_map))
        self.val_history.append(val)
        self.step += 1
        if self.step >= self._max_steps():
            self.done = True
        else:
            self._new_step()
        return {"val_measure": val}

    def _better(self, new: float, old: float) -> bool:
        return new > old if self.cfg.mode == "sentence" else new < old

    @torch.no_grad()
    def _apply(self, side: str, m: nn.Module) -> None:
        m.eval()
        if side == "T":
            self.v_hat = m(self.v_hat)      # T̂_k = T_k ∘ T̂_{k-1}: only the image side moves
        else:
            self.t_hat = m(self.t_hat)      # V̂_k = V_k ∘ V̂_{k-1}: only the label side moves
        m.train()

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def current_representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(v̂, t̂) as if the step in progress ended now (so a sliced step can be evaluated)."""
        if self.done or self.iter_in_step == 0:
            return self.v_hat, self.t_hat
        if self._step_kind(self.step) == "sup":
            self.t_map.eval()
            out = self.t_map(self.v_hat), self.t_hat
            self.t_map.train()
            return out
        self.v_map.eval()
        out = self.v_hat, self.v_map(self.t_hat)
        self.v_map.train()
        return out

    @torch.no_grad()
    def validation_measure(self) -> float:
        """ZSL: L_sup (eq. 2) on held-out seen images with fixed negatives (lower = better).
        Sentence mode: mean cosine between images and their nearest predicted sentence (higher = better)."""
        v_hat, t_hat = self.v_hat, self.t_hat
        g = torch.Generator().manual_seed(self.seed + 99)
        if self.cfg.mode == "sentence":
            idx = torch.as_tensor(self.val_imgs)
            v = F.normalize(v_hat[idx.to(self.device)], dim=1)
            t = F.normalize(t_hat[idx.to(self.device)], dim=1)
            return float((v @ t.T).max(dim=1).values.mean())
        idx = torch.as_tensor(self.val_imgs)
        lab = self.labels[idx]
        seen = torch.as_tensor(self.seen_classes)
        pos = self.seen_pos[lab]
        t_neg = seen[(pos + torch.randint(1, len(seen), (len(idx),), generator=g)) % len(seen)]
        v_neg = self.val_table.negatives(pos, g)             # an image of another class, as in training
        dev = self.device
        v, t = v_hat[idx.to(dev)], t_hat[lab.to(dev)]
        # the maps are already applied to v̂ and t̂, so T and V are the identity here
        return float(supervised_loss(v, t, t_hat[t_neg.to(dev)], v, t, v_hat[v_neg.to(dev)], self.cfg.gamma))

    def evaluate(self, split: str = "val", per_image: bool = False) -> dict[str, Any]:
        """ZSL and GZSL Flat-Hit@k and MFR (%), keys ``zsl/...`` and ``gzsl/...`` (§4.2)."""
        if self.cfg.mode == "sentence":
            return self._evaluate_sentences(split)
        cands = zsl_candidates(self.data, split, self.fit_split, "CM-GAN")
        v_hat, t_hat = self.current_representations()
        imgs = self.data.images(split)
        v = v_hat[torch.as_tensor(imgs).to(self.device)]
        return zsl_evaluation(v, self.data.labels[imgs], cands, lambda c: t_hat[torch.as_tensor(c).to(self.device)],
                              self.cfg.ks, per_image)

    def chance(self, split: str = "val") -> dict[str, float]:
        """Expected FH@k / MFR of a random ranking of the same candidates (ZSL and GZSL)."""
        if self.cfg.mode == "sentence":
            n = len(self.data.images(split))
            ks = [k for k in (1, 5, 10) if k <= n]
            return {f"{d}/{k}": v for d in ("t2i", "i2t") for k, v in zsl_chance(n, ks).items()}
        return zsl_chance_of(zsl_candidates(self.data, split, self.fit_split, "CM-GAN"), self.cfg.ks)

    def _evaluate_sentences(self, split: str) -> dict[str, Any]:
        imgs = self.data.images(split)
        v_hat, t_hat = self.current_representations()
        idx = torch.as_tensor(imgs).to(self.device)
        v, t = v_hat[idx], t_hat[idx]
        target = torch.arange(len(imgs))
        res = {}
        ks = [k for k in (1, 5, 10) if k <= len(imgs)]
        for name, q, g in (("t2i", t, v), ("i2t", v, t)):
            ranks = zsl_ranks_from_embeddings(q, g, target)
            for key, val in zsl_metrics_from_ranks(ranks, len(imgs), ks).items():
                res[f"{name}/{key}"] = val
        return res

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**self.state_header(),
                "step": self.step, "iter_in_step": self.iter_in_step, "done": self.done,
                "val_history": list(self.val_history), "rng": rng_state(self.gen),
                "kept": [{"side": s, "state": m.state_dict()} for s, m in self.kept],
                "current": {"t_map": self.t_map.state_dict(), "v_map": self.v_map.state_dict(),
                            "d_t": self.d_t.state_dict(), "d_v": self.d_v.state_dict(),
                            "opt_maps": self.opt_maps.state_dict(), "opt_d": self.opt_d.state_dict()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_state(state)
        dim, res = self.t0.shape[1], self.cfg.map_init == "residual"
        self.v_hat, self.t_hat = self.v0.clone(), self.t0.clone()
        self.kept = []
        for item in state["kept"]:                 # rebuild the composition T̂_K, V̂_K
            m = CrossModalMap(dim, self.cfg.hidden, res).to(self.device)
            m.load_state_dict(item["state"])
            self._apply(item["side"], m)
            self.kept.append((item["side"], m))
        self.step = int(state["step"])
        self._new_step()
        cur = state["current"]
        for name in ("t_map", "v_map", "d_t", "d_v"):
            getattr(self, name).load_state_dict(cur[name])
        for name in ("opt_maps", "opt_d"):
            getattr(self, name).load_state_dict(cur[name])
            optimizer_to(getattr(self, name), self.device)
        self.step, self.iter_in_step, self.done = int(state["step"]), int(state["iter_in_step"]), bool(state["done"])
        self.val_history = [float(x) for x in state["val_history"]]
        restore_rng(self.gen, state["rng"], reseed=self.seed * 7919 + self.step * 100_003 + self.iter_in_step)
