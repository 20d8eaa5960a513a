"""Model configuration: dataset and size defaults; the families the CLI offers."""

from __future__ import annotations

from zsexp.models import dataset_defaults, make_config, size_defaults


def test_size_defaults_apply_to_small_data_only(tiny):
    import dataclasses

    assert dataset_defaults("zscrgan", tiny) == tiny.defaults["zscrgan"]          # built-in data: its own
    bare = dataclasses.replace(tiny, defaults={})
    small = size_defaults("zscrgan", bare)
    assert small["em_schedule"] == "fixed" and small["updates_per_step"] == 100
    assert make_config("zscrgan", bare).g_hidden == small["g_hidden"]


def test_the_cli_offers_exactly_the_model_families():
    """The CLI names the families without importing torch; each name has its spec and no spec is missing."""
    from zsexp.models import MODELS
    from zsexp.names import MODEL_NAMES

    assert tuple(MODELS) == MODEL_NAMES
