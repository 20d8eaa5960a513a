"""Where ZSCRGAN's retrieval gap to ridge opens (issue 11, item 3): the generator, the CSEM, or the task.

    python benchmarks/gap_decomposition.py                                   # synthetic-tiny, defaults, 3 seeds
    python benchmarks/gap_decomposition.py --set em_schedule=fixed --set updates_per_step=200
    python benchmarks/gap_decomposition.py --data ../shared/data/uci-mfeat --data-seed 1

ZSCRGAN is trained with the dataset's defaults plus ``--set`` (the round with the best validation P@50 is
kept, as ``zsexp train`` keeps it).  Then, for the seen (train), validation and test classes, the same
class-text queries are scored four ways over the split's images, with the same P@50:

- **ceiling**: each class's true mean image as its query (cosine in the image space, raw and centred
  on the training images' mean): roughly what a per-class query vector reaches with cosine ranking on
  these features;
- **ridge**: the task baseline (``lam`` tuned on validation, fitted on train), class text -> image space;
- **G alone**: ZSCRGAN's generator output i_t = G(z, mu(phi_t)) (Alg. 2 l.4-6) used directly as the query
  in the image space -- Alg. 2 without the CSEM;
- **model**: the complete Alg. 2 (theta_t = CSEM(i_t) against CSEM(I)).

Beside the P@50 of ridge and G: how close the query is to the class's mean image (cosine, raw and
centred on the split's image mean) and its norm relative to the mean image's.  If "G alone" is far
below ridge while "model" is close to "G alone", the gap is the generator's text -> image transfer, not
the common space.  Means over ``--seeds`` model seeds; the data split is fixed (``--data-seed``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
import yaml

SPLITS = ("train", "val", "test")


def class_means(data, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    idx = data.images(split)
    classes = torch.as_tensor(data.classes(split))
    feats = torch.as_tensor(data.features[idx]).float()
    labels = torch.as_tensor(data.labels[idx])
    means = torch.stack([feats[labels == c].mean(0) for c in classes.tolist()])
    return means, feats, labels, classes


def closeness(query: torch.Tensor, means: torch.Tensor, feats: torch.Tensor) -> dict[str, float]:
    centre = feats.mean(0)
    return {"cos": F.cosine_similarity(query, means, dim=1).mean().item(),
            "cos_centred": F.cosine_similarity(query - centre, means - centre, dim=1).mean().item(),
            "norm_ratio": (query.norm(dim=1).mean() / means.norm(dim=1).mean()).item()}


def p_at_50(query: torch.Tensor, classes: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, k: int,
            centre: torch.Tensor | None = None) -> float:
    """P@50 of one query per class over the split's images, cosine around ``centre`` (default: none)."""
    from zsexp.metrics import retrieval_evaluation

    c = torch.zeros(feats.shape[1]) if centre is None else centre
    return retrieval_evaluation(query - c, classes, feats - c, labels, k=k)["precision@50"]


def train_best(data, sets: dict, seed: int):
    from zsexp.models import build_model, get_spec, make_config

    cfg = make_config("zscrgan", data, ("--set", sets))
    model = build_model("zscrgan", cfg, data, seed=seed)
    best, state = None, None
    for _ in range(get_spec("zscrgan").rounds(model)):
        model.train_round()
        v = model.evaluate("val")["precision@50"]
        if best is None or v > best:
            best, state = v, copy.deepcopy(model.state_dict())      # state_dict() holds live tensors
    model.load_state_dict(state)
    return model, cfg


def one_seed(data, sets: dict, seed: int) -> dict[str, dict[str, float]]:
    from zsexp.baselines import task_baseline
    from zsexp.models import build_model, make_config
    from zsexp.models.zscrgan import alg2_query_embedding

    model, cfg = train_best(data, sets, seed)
    lam = task_baseline("zscrgan", data, "train", model_cfg=cfg)["config"]["lam"]
    ridge = build_model("ridge", make_config("ridge", data, ("baseline", {"lam": lam, "eval_k": cfg.eval_k})), data)
    ridge.train_round()
    out: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        means, feats, labels, classes = class_means(data, split)
        phi = torch.as_tensor(data.class_embeddings[classes.numpy()]).float()
        split_data = (classes, feats, labels)

        with torch.no_grad():
            model._train_mode(False)
            g_alone = alg2_query_embedding(model.te, model.g, None, phi, noise_dim=cfg.noise_dim,
                                           z_samples=cfg.eval_z_samples, seed=seed).cpu()
        r_query = ridge._map(phi) + ridge.origin            # back in the image space (uncentred)
        centre = ridge.origin                               # the training images' mean
        row = {"ceiling": p_at_50(means, *split_data, k=cfg.eval_k),
               "ceiling_c": p_at_50(means, *split_data, k=cfg.eval_k, centre=centre),
               "ridge": p_at_50(r_query, *split_data, k=cfg.eval_k, centre=centre),
               "g_alone": p_at_50(g_alone, *split_data, k=cfg.eval_k),
               "g_alone_c": p_at_50(g_alone, *split_data, k=cfg.eval_k, centre=centre)}
        row.update({f"ridge_{k}": v for k, v in closeness(r_query, means, feats).items()})
        row.update({f"g_{k}": v for k, v in closeness(g_alone, means, feats).items()})
        if split != "train":
            row["model"] = model.evaluate(split)["precision@50"]
        out[split] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic-tiny")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ZSCRGAN config key")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from zsexp.config import parse_set
    from zsexp.data import load_dataset

    sets = parse_set(args.set)
    data = load_dataset(args.data, seed=args.data_seed)
    t0 = time.time()
    runs = [one_seed(data, sets, s) for s in range(args.seeds)]
    print(f"ZSCRGAN on {data.name} (data seed {args.data_seed}), {args.seeds} model seeds, "
          f"--set {yaml.safe_dump(sets, default_flow_style=True).strip()}; {time.time() - t0:.0f}s")
    cols = ["ceiling", "ceiling_c", "ridge", "g_alone", "g_alone_c", "model", "ridge_cos_centred", "g_cos_centred",
            "ridge_norm_ratio", "g_norm_ratio"]
    print("P@50 with one query per class; 'centred': cosine around the training images' mean (as ridge scores)")
    print("| classes | ceiling: true class mean | ceiling, centred | ridge (centred) | G alone (no CSEM) "
          "| G alone, centred | model (Alg. 2) | centred cos to the class mean: ridge | G "
          "| norm / class mean: ridge | G |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for split in SPLITS:
        cells = []
        for c in cols:
            vals = [r[split][c] for r in runs if c in r[split]]
            if not vals:
                cells.append("-")
                continue
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f}" if "cos" in c or "norm" in c
                         else f"{statistics.mean(vals):.2f} ± {sd:.2f}")
        name = {"train": "seen (train)", "val": "validation", "test": "test"}[split]
        print(f"| {name} | {' | '.join(cells)} |")
    gap = statistics.mean(r["test"]["ridge"] - r["test"]["model"] for r in runs)
    via_g = statistics.mean(r["test"]["ridge"] - r["test"]["g_alone"] for r in runs)
    print(f"\ntest P@50 gap ridge - model: {gap:+.2f}; ridge - G alone: {via_g:+.2f} "
          f"(the part of the gap already present before the CSEM)")


if __name__ == "__main__":
    main()
