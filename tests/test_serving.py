"""Serving: a checkpoint loaded as a retriever embeds as the trained model does."""

from __future__ import annotations

import torch

from tests.helpers import zscrgan_model


def test_served_model_follows_eval_c_sample(tiny, tmp_path):
    from zsexp.models.common import save_checkpoint
    from zsexp.serving import load_retriever
    from zsexp.train import checkpoint_state

    m = zscrgan_model(tiny, eval_c="sample")
    m.train_round()
    save_checkpoint(checkpoint_state(m, tiny, "synthetic-tiny", 0), tmp_path / "m.pt")
    phi = torch.as_tensor(tiny.class_embeddings[tiny.test_classes])
    assert torch.allclose(load_retriever(tmp_path / "m.pt").embed_queries(phi), m.embed_queries(phi), atol=1e-6)

