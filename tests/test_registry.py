"""`zsexp promote`: aliases in the MLflow model registry, the regression guard."""

from __future__ import annotations

import pytest

from zsexp.cli import main
from zsexp.tracking import client

pytestmark = pytest.mark.slow


def test_promote_refuses_a_worse_version(ray_cluster, capsys):
    assert main(["search", "zscrgan", "--trials", "2", "--name", "p1", "--set", "em_iterations=3",
                 "--set", "updates_per_step=10", "--progress-every", "0"]) == 0
    assert main(["select", "p1", "--k", "1", "--seeds", "1", "--register-as", "reg"]) == 0
    c = client()
    v1 = c.get_model_version_by_alias("reg", "candidate")
    assert main(["promote", "reg"]) == 0
    # a second version that claims a worse test objective
    c.set_registered_model_alias("reg", "candidate", v1.version)
    src = c.get_model_version("reg", v1.version)
    v2 = c.create_model_version("reg", src.source, run_id=src.run_id)
    for k, v in src.tags.items():
        c.set_model_version_tag("reg", v2.version, k, v)
    worse = str(float(src.tags["zsexp.test_objective_mean"]) - 5)
    c.set_model_version_tag("reg", v2.version, "zsexp.test_objective_mean", worse)
    capsys.readouterr()
    assert main(["promote", "reg", "--version", str(v2.version)]) == 2
    err = capsys.readouterr().err
    assert "refusing to move @champion" in err and "only guards against a regression" in err
    assert c.get_model_version_by_alias("reg", "champion").version == v1.version
    assert main(["promote", "reg", "--version", str(v2.version), "--force"]) == 0
    now = c.get_model_version("reg", v2.version)
    assert c.get_model_version_by_alias("reg", "champion").version == v2.version
    assert now.tags["zsexp.previous_champion"] == str(v1.version)
    assert main(["promote", "reg", "--list"]) == 0
    assert "champion" in capsys.readouterr().out

