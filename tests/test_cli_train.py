"""`zsexp train` / `zsexp evaluate` in-process: outputs on disk, reload gives the same metrics, bad input."""

from __future__ import annotations

import json

import pytest

from zsexp.cli import main


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
        assert main(["train", "zscrgan", "--threads", "0", "--out", str(tmp_path / "x")]) == 2
        assert "--threads must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_help_into_a_closed_pipe_exits_quietly():
    """`zsexp train zscrgan --help | head`: the reader closes early; no traceback, the SIGPIPE status."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "train", "zscrgan", "--help"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                      # closed before the help is written: every write fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
