"""`zsexp train` / `zsexp evaluate`: one run, its checkpoint, chance and baseline beside it, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import DIVERGE, assert_refused, cli
from zsexp.cli import main
from zsexp.data import load_dataset
from zsexp.data.schema import ZSLData, validate

pytestmark = pytest.mark.slow


def _one_val_class(tiny) -> ZSLData:
    d = load_dataset("synthetic-tiny")
    return validate(ZSLData(name="one-val", features=d.features, labels=d.labels, class_embeddings=d.class_embeddings,
                            class_names=d.class_names, train_classes=np.concatenate([d.train_classes,
                                                                                      d.val_classes[1:]]),
                            val_classes=d.val_classes[:1], test_classes=d.test_classes))


@pytest.mark.parametrize("model,sets", [("zscrgan", ["em_iterations=3"]), ("cmgan", ["iters_per_step=30"])])
def test_train_then_evaluate(tmp_path, capsys, model, sets):
    out = tmp_path / model
    args = ["train", model, "--dataset", "synthetic-tiny", "--out", str(out), "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "round   1/" in printed and "best round" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fingerprint"] and metrics["seed"] == 0 and metrics["config"]
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert main(["evaluate", str(out / "best.pt"), "--json", "--device", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out)["metrics"]
    assert again == pytest.approx(metrics["test"])


def test_train_config_file_and_errors(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("em_iterations: 2\nalpha: 0.25\n")
    assert main(["train", "zscrgan", "--config", str(good), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["config"]["alpha"] == 0.25
    capsys.readouterr()
    bad = tmp_path / "bad.yaml"
    bad.write_text("em_iterations: [2\n")
    assert main(["train", "zscrgan", "--config", str(bad)]) == 2
    assert "bad.yaml: malformed YAML" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("gamma_typo: 1\n")
    assert main(["train", "cmgan", "--config", str(unknown)]) == 2
    err = capsys.readouterr().err
    assert "unknown.yaml" in err and "gamma_typo" in err
    assert main(["train", "cmgan", "--set", "gamma=5"]) == 2
    assert "`gamma` must be in [0.0, 2.0]" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_checkpoint_cannot_run_code(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    assert main(["evaluate", str(path)]) == 2
    captured = capsys.readouterr()
    assert "owned" not in captured.out and "not a readable zsexp checkpoint" in captured.err


def test_train_with_nothing_to_train(tmp_path, capsys):
    """CM-GAN's CONSE-only ablation has zero rounds: the run still evaluates and writes its outputs."""
    out = tmp_path / "conse"
    assert main(["train", "cmgan", "--set", "ablation=conse", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds"] == 0 and 0 < metrics["test"]["zsl/mfr"] < 100


def test_threads_option(tmp_path, capsys):
    import torch

    from zsexp.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["train", "zscrgan", "--set", "em_iterations=1", "--threads", "1", "--out", str(tmp_path)]) == 0
        assert "1 CPU threads" in capsys.readouterr().out and torch.get_num_threads() == 1
        with pytest.raises(SystemExit) as exc:           # a usage error: argparse's exit 2
            main(["train", "zscrgan", "--threads", "0", "--out", str(tmp_path / "x")])
        assert exc.value.code == 2
        assert "--threads: must be a finite number between 1 and" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_train_reports_chance_and_baseline(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "zscrgan", "--out", str(out), "--device", "cpu", "--set", "em_iterations=2"]) == 0
    printed = capsys.readouterr().out
    assert "| ridge " in printed and "| chance " in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["chance"]["test"]["precision@50"] == pytest.approx(100 / 6, abs=0.5)
    assert m["baseline"]["model"] == "ridge" and "precision@50" in m["baseline"]["test"]
    assert "degenerate_queries" in m["test"]
    assert main(["evaluate", str(out / "best.pt"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "chance" in printed and "ridge" in printed
    assert main(["train", "ridge", "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["baseline"] is None


def test_train_help_shows_defaults_ranges_and_dataset_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "zscrgan", "--dataset", "synthetic-cub", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "em_schedule        linear" in out and "in [0.0, 100.0]" in out and "eq. 12" in out
    assert "on synthetic-cub: g_hidden=[512, 1024]" in out and "cmgan config keys" not in out


def test_train_fit_trainval_keeps_the_last_round(tiny, tmp_path):
    from zsexp.train import train_run

    res = train_run("zscrgan", "synthetic-tiny", sets=["em_iterations=3", "batch_size=16"], out_dir=tmp_path,
                    fit_split="trainval", log=lambda *_: None)
    assert res["selected_by"] == "last round" and res["best_round"] == 3 and res["val"] is None
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["selected_by"] == "last round" and "precision@50" in saved["test"]


def test_a_single_validation_class_is_refused(tiny, tmp_path):
    d = _one_val_class(tiny)
    path = tmp_path / "one.npz"
    np.savez(path, features=d.features, labels=d.labels, class_embeddings=d.class_embeddings,
             train_classes=d.train_classes, val_classes=d.val_classes, test_classes=d.test_classes)
    from zsexp.cli import main

    assert main(["train", "zscrgan", "--dataset", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert main(["search", "zscrgan", "--dataset", str(path), "--name", "one", "--trials", "1"]) == 2


def test_diverging_train_refuses_and_leaves_no_folder(home, capfd, monkeypatch):
    out = home.parent / "runs" / "nan"
    res = cli(home, "train", "zscrgan", *DIVERGE, "--out", str(out), capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, "diverged")
    assert not (home.parent / "runs").exists()

