"""Search spaces: shipped files, refusals naming the key, list parameters, lambda under linear R."""

from __future__ import annotations

import pytest
import yaml

from zsexp.cli import main
from zsexp.errors import ZsexpError
from zsexp.models import MODELS
from zsexp.models.cmgan import CMGANConfig
from zsexp.search.space import default_space_path, load_space, parse_space, trial_overrides

BASE = {"model": "zscrgan", "params": {"alpha": {"type": "uniform", "low": 0.1, "high": 1.0}}}
MO = [{"metric": "precision@50", "mode": "max"}, {"metric": "compute_wall_s", "mode": "min"}]


@pytest.mark.parametrize("model", sorted(MODELS))
def test_shipped_spaces_load(model):
    space = load_space(None, model)
    assert space.model == model and space.params
    dists = space.distributions()
    assert set(dists) == set(space.params)


def test_shipped_zscrgan_spaces_reach_working_budgets():
    """The small-data rule trains ZSCRGAN 2,000 updates (docs/science.md, training budgets): a sweep can reach it
    and more, and ASHA compares trials at equal updates, not at equal iterations of unequal size."""
    for path in (None, default_space_path("zscrgan").parent / "zscrgan-small.yaml"):
        space = load_space(path, "zscrgan")
        assert space.unit == "updates" and space.fixed["em_schedule"] == "fixed"
        most = max(space.params["updates_per_step"]["choices"]) * space.fixed["em_iterations"]
        assert most >= space.max_updates >= 2000 > space.grace_updates
    assert "latent_dim" in load_space(default_space_path("zscrgan").parent / "zscrgan-small.yaml", "zscrgan").params


@pytest.mark.parametrize("patch,match", [
    ({"params": {"alphaa": {"type": "uniform", "low": 0, "high": 1}}}, r"params.alphaa.*unknown hyper-parameter"),
    ({"params": {"alpha": {"type": "uniform", "low": 1.0, "high": 1.0}}}, r"params.alpha.*empty range"),
    ({"params": {"beta": {"type": "loguniform", "low": 0.0, "high": 1.0}}}, r"params.beta.*log range must be positive"),
    ({"params": {"alpha": {"type": "int", "low": 0, "high": 3}}}, r"params.alpha.*needs an integer key"),
    ({"params": {"batch_size": {"type": "categorical", "choices": ["big"]}}}, r"batch_size.*must be an integer"),
    ({"params": {"alpha": {"type": "uniform", "low": -1.0, "high": 1.0}}}, r"alpha.*values must be in \[0.0, 100.0\]"),
    ({"params": {"alpha": {"type": "gaussian", "low": 0, "high": 1}}}, r"unknown type 'gaussian'"),
    ({"params": {"d_steps[0]": {"type": "int", "low": 1, "high": 3}}}, r"not a list"),
    ({"objective": {"metric": "accuracy", "mode": "max"}}, r"objective.metric"),
    ({"objective": {"metric": "top1", "mode": "up"}}, r"objective.mode"),
    ({"fidelity": {"max_rounds": 0}}, r"fidelity.max_rounds"),
    ({"fidelity": {"unit": "epochs"}}, r"fidelity.unit.*rounds or updates"),
    ({"fidelity": {"unit": "updates", "grace_updates": 500, "max_updates": 100}}, r"fidelity.grace_updates"),
    ({"fidelity": {"grace_updates": 5}}, r"need `unit: updates`"),
    ({"sampler": {"name": "bayes"}}, r"sampler.name"),
    ({"sampler": {"name": "grid"}}, r"params.alpha.*grid sampler needs `type: categorical`"),
    ({"sampler": {"name": "grid", "seed": 3}}, r"grid sampler takes no options"),
    ({"fixed": {"gamma": 1}}, r"unknown key\(s\) \['gamma'\]"),
    # several objectives (zsexp.search.objectives): each key named with its allowed values
    ({"objective": [{"metric": "precision@50"}, {"metric": "accuracy", "mode": "max"}]},
     r"objective\[1\].metric.*must be one of \[.*'map@50'.*'compute_wall_s'"),
    ({"objective": [{"metric": "precision@50"}, {"metric": "map@50", "mode": "most"}]},
     r"objective\[1\].mode.*must be min or max, got 'most'"),
    ({"objective": [{"metric": "map@50", "mode": "max"}, {"metric": "map@50", "mode": "min"}]},
     r"objective\[1\].metric.*a second time"),
    ({"objective": [{"metric": "compute_wall_s", "mode": "min"}, {"metric": "map@50", "mode": "max"}]},
     r"objective\[0\].metric.*first objective must be a quality metric"),
    ({"objective": [{"metric": m, "mode": "max"} for m in ("precision@50", "map@50", "top1", "map")]
                   + [{"metric": "compute_wall_s", "mode": "min"}]}, r"at most 4 objectives"),
    ({"objective": [], "scheduler": "none"}, r"objective.*non-empty list"),
    ({"objective": MO, "scheduler": "asha"}, r"scheduler.*asha ranks a rung.*non-dominated sorting"),
    ({"objective": MO, "sampler": {"name": "cmaes"}}, r"sampler.name.*'cmaes' optimises one objective.*nsga2"),
    ({"objective": MO, "sampler": {"name": "grid"}, "params": {"alpha": {"type": "categorical", "choices": [1.0]}}},
     r"sampler.name.*'grid' optimises one objective"),
    ({"colour": "red"}, r"unknown top-level key"),
    ({"params": {}}, r"params.*non-empty"),
])
def test_bad_spaces_rejected(tmp_path, patch, match):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, **patch}))
    with pytest.raises(ZsexpError, match=match) as info:
        load_space(path, "zscrgan")
    assert str(path) in str(info.value)


def test_malformed_yaml_and_cli_exit_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model: zscrgan\nparams: {alpha: [\n")
    assert main(["search", "zscrgan", "--space", str(path), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml: malformed YAML" in err and "Traceback" not in err
    path.write_text(yaml.safe_dump({**BASE, "model": "cmgan"}))
    assert main(["search", "zscrgan", "--space", str(path)]) == 2
    assert "this file is for 'cmgan'" in capsys.readouterr().err


def test_indexed_list_params_build_the_list():
    over = trial_overrides(CMGANConfig, {}, {"max_steps": 4}, {"lambda_c[1]": 7.0, "gamma": 0.3})
    assert over == {"max_steps": 4, "lambda_c": [1.0, 7.0, 1.0], "gamma": 0.3}
    assert default_space_path("cmgan").is_file()


def test_lam_under_linear_r_is_refused_and_not_in_the_default_space():
    raw = {"model": "zscrgan", "params": {"lam": {"type": "uniform", "low": 0.0, "high": 5.0}}}
    with pytest.raises(ZsexpError, match="params.lam.*r_form=linear"):
        parse_space(raw, "s.yaml", "zscrgan")
    assert parse_space({**raw, "fixed": {"r_form": "hinge"}}, "s.yaml", "zscrgan").params["lam"]
    raw2 = {"model": "zscrgan", "params": {"updates_per_step": {"type": "int", "low": 10, "high": 50}}}
    with pytest.raises(ZsexpError, match="em_schedule=linear"):
        parse_space(raw2, "s.yaml", "zscrgan")
    assert "lam" not in load_space(default_space_path("zscrgan"), "zscrgan").params



def test_multi_objective_space():
    """A list of objectives: Optuna's multi-objective view (keys, modes), no early stopping by default, tpe
    (MOTPE) unless told; one objective as a list of one is the single-objective space it always was."""
    raw = {**BASE, "objective": [{"metric": "precision@50", "mode": "max"}, {"metric": "compute_wall_s"}]}
    raw.pop("scheduler", None)
    space = parse_space(raw, "s.yaml", "zscrgan")
    assert space.multi and space.metric_keys == ["val_precision_at_50", "compute_wall_s"]
    assert space.modes == ["max", "min"] and space.scheduler == "none" and space.sampler == "tpe"
    assert space.single("compute_wall_s").metric_keys == ["compute_wall_s"]
    nsga = parse_space({**raw, "sampler": {"name": "nsga2", "population_size": 8}}, "s.yaml", "zscrgan")
    assert type(nsga.make_sampler(0)).__name__ == "NSGAIISampler"
    one = parse_space({**BASE, "objective": [{"metric": "map@50", "mode": "max"}]}, "s.yaml", "zscrgan")
    assert not one.multi and one.metric_key == "val_map_at_50" and one.scheduler == BASE.get("scheduler", "asha")
