"""Hard edges, second pass: the five rules of docs/safety.md that hold wherever a user's input enters.

1. bounded input (YAML structure, sizes, numeric options, echoed values), 2. degenerate data refused,
3. the environment is input, 4. read-only and failing storage, 5. a sweep's files are its own.
Every case goes through the real CLI (``zsexp.cli.main`` in this process, or ``python -m zsexp.cli``),
expects exit 2 and one stderr line naming the culprit, and checks that nothing was created or changed
(``tests.helpers.tree``).  The existing tables of ``test_cli.py`` stay as they are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_refused, cli, copy_home, refused_unchanged, tree
from zsexp.data import load_dataset, save_npz

pytestmark = pytest.mark.slow
SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "zscrgan.yaml"


# --------------------------------------------------------------------------- 1. bounded input
def _write(home: Path, name: str, text: str) -> str:
    p = home.parent / name
    p.write_text(text)
    return str(p)


def _laughs(home: Path) -> str:        # nine levels of aliases: 10**9 values once expanded
    lines = ["model: zscrgan", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    return _write(home, "laughs.yaml", "\n".join(lines) + "\nparams: *a8\n")


def _alias_line() -> str:
    parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    return "[" + ", ".join(parts) + "]"


def _dup_space(home: Path) -> str:
    return _write(home, "dup.yaml", SPACE.read_text() + "sampler: {name: random}\n")


def _dup_config(home: Path) -> str:
    return _write(home, "dup-config.yaml", "alpha: 0.5\nbeta: 2\nalpha: 1.5\n")


def _big_space(home: Path) -> str:
    return _write(home, "big.yaml", SPACE.read_text() + "# " + "x" * (2 << 20) + "\n")


def _deep_space(home: Path) -> str:
    return _write(home, "deep.yaml", "model: zscrgan\nfixed: " + "[" * 5000 + "]" * 5000 + "\n")


def _space_with(line: str):
    def make(home: Path) -> str:
        params = "params: {alpha: {type: uniform, low: 0, high: 1}}"
        return _write(home, "space.yaml", f"model: zscrgan\n{line}\n{params}\n")
    return make


def _npz_claiming(home: Path) -> str:
    """A .npz of a few hundred bytes whose `features` header claims 8 TB: refused from the header."""
    d = load_dataset("synthetic-tiny")
    p = home.parent / "bomb.npz"
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
    with zipfile.ZipFile(p, "w") as z:
        with z.open("features.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
        for key in ("labels", "class_embeddings", "train_classes", "val_classes", "test_classes"):
            with z.open(f"{key}.npy", "w") as f:
                np.save(f, getattr(d, key))
    return str(p)


def _npz_twice(home: Path) -> str:
    import warnings

    d = load_dataset("synthetic-tiny")
    p = home.parent / "twice.npz"
    with warnings.catch_warnings(), zipfile.ZipFile(p, "w") as z:
        warnings.simplefilter("ignore")                    # zipfile warns of the duplicate name
        for key in ("features", "labels", "class_embeddings", "train_classes", "val_classes", "test_classes",
                    "features"):
            with z.open(f"{key}.npy", "w") as f:
                np.save(f, getattr(d, key) * (2 if key == "features" else 1))
    return str(p)


def _npz_many(home: Path) -> str:
    d = load_dataset("synthetic-tiny")
    p = home.parent / "many.npz"
    np.savez(p, features=d.features, labels=d.labels, class_embeddings=d.class_embeddings,
             train_classes=d.train_classes, val_classes=d.val_classes, test_classes=d.test_classes,
             **{f"a{i}": np.zeros(1) for i in range(40)})
    return str(p)


BOUNDED = [
    ("yaml-aliases", ["search", "zscrgan", "--space", _laughs], "aliases"),
    ("yaml-duplicate-key", ["search", "zscrgan", "--space", _dup_space], "given twice"),
    ("config-duplicate-key", ["train", "zscrgan", "--config", _dup_config], "'alpha' is given twice"),
    ("yaml-too-large", ["search", "zscrgan", "--space", _big_space], "larger than"),
    ("yaml-too-deep", ["search", "zscrgan", "--space", _deep_space], "nested"),
    ("set-twice", ["search", "zscrgan", "--set", "alpha=1", "--set", "alpha=2"], "given twice"),
    ("set-yaml-aliases", ["train", "zscrgan", "--set", lambda h: "g_hidden=" + _alias_line()], "aliases"),
    ("seed-past-2**32", ["search", "zscrgan", "--seed", str(2**40)], "--seed"),
    ("data-seed-negative", ["train", "ridge", "--data-seed", "-1"], "--data-seed"),
    ("threads-past-cpus", ["train", "ridge", "--threads", "100000"], "--threads"),
    ("retries-huge", ["search", "zscrgan", "--retries", "1000000000"], "--retries"),
    ("select-seeds-huge", ["select", "x", "--seeds", "1000000"], "--seeds"),
    ("ablate-data-seeds-huge", ["ablate", "zscrgan", "--data-seeds", str(2**63)], "--data-seeds"),
    ("gpus-inf", ["search", "zscrgan", "--gpus", "inf"], "--gpus"),
    ("progress-huge", ["search", "zscrgan", "--progress-every", "1e300"], "--progress-every"),
    ("space-rounds-huge", ["search", "zscrgan", "--space", _space_with("fidelity: {max_rounds: 1000000000000}")],
     "fidelity.max_rounds"),
    ("space-reduction-nan", ["search", "zscrgan", "--space", _space_with("fidelity: {reduction_factor: .nan}")],
     "fidelity.reduction_factor"),
    ("sampler-count-huge", ["search", "zscrgan", "--space",
                            _space_with("sampler: {name: tpe, n_ei_candidates: 1000000000}")], "n_ei_candidates"),
    ("npz-header-bomb", ["data", "describe", _npz_claiming], "GiB"),
    ("npz-too-many-arrays", ["search", "zscrgan", "--dataset", _npz_many], "(46 in all)"),
    ("npz-array-twice", ["train", "ridge", "--dataset", _npz_twice], "stored twice"),
]


@pytest.mark.parametrize("case", BOUNDED, ids=[c[0] for c in BOUNDED])
def test_bounded_input(case, home, capfd, monkeypatch):
    _, argv, needle = case
    refused_unchanged(home, argv, needle, capfd=capfd, monkeypatch=monkeypatch)


def test_a_value_echoed_in_an_error_is_cut(home, capfd, monkeypatch):
    for argv in (["search", "zscrgan", "--set", "k" * 20_000 + "=1"],
                 ["search", "zscrgan", "--dataset", "/no/" + "d" * 20_000 + ".npz"],
                 ["search", "zscrgan", "--trials", "9" * 5_000]):
        res = cli(home, *argv, capfd=capfd, monkeypatch=monkeypatch)
        assert_refused(res)
        assert len(res.stderr.strip()) < 700, len(res.stderr)
        assert "characters)" in res.stderr                       # says that it was cut, and how long it was


def test_a_checkpoint_past_the_bound_is_refused_unread(home, tmp_path, capfd, monkeypatch):
    res = cli(home, "train", "ridge", "--out", str(tmp_path / "run"), capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr
    import zsexp.models.common as common

    monkeypatch.setattr(common, "MAX_CHECKPOINT_BYTES", 1024)        # the rule, at a size a test can make
    assert_refused(cli(home, "evaluate", str(tmp_path / "run" / "best.pt"), capfd=capfd, monkeypatch=monkeypatch),
                   "at most")


# --------------------------------------------------------------------------- 2. degenerate data
def _variant(tmp: Path, name: str, change) -> str:
    d = load_dataset("synthetic-tiny")
    arrays = {"features": d.features.copy(), "class_embeddings": d.class_embeddings.copy(),
              "text_features": d.text_features.copy(), "labels": d.labels.copy()}
    change(arrays, d)
    import dataclasses

    out = dataclasses.replace(d, **arrays)
    p = tmp / f"{name}.npz"
    save_npz(out, p)
    return str(p)


def _no_feature_dims(a, d):
    a["features"] = np.zeros((d.features.shape[0], 0), np.float32)


def _constant_features(a, d):
    a["features"][:] = 0.25


def _zero_embeddings(a, d):
    a["class_embeddings"][:] = 0.0


def _constant_text(a, d):
    a["text_features"][:] = 1.0


def _val_without_images(a, d):
    # every image of a validation class relabelled to a train class: the split has no samples
    a["labels"][np.isin(a["labels"], d.val_classes)] = d.train_classes[0]


DEGENERATE = [
    ("no-feature-dims", _no_feature_dims, "`features` has no feature dimensions"),
    ("constant-features", _constant_features, "`features` is the same vector in every row"),
    ("zero-class-embeddings", _zero_embeddings, "`class_embeddings` is all zero"),
    ("constant-text", _constant_text, "`text_features` is the same vector"),
    ("val-split-no-samples", _val_without_images, "of split `val` have no images"),
]
COMMANDS = [["data", "describe", "{}"], ["train", "zscrgan", "--dataset", "{}"],
            ["search", "zscrgan", "--dataset", "{}"], ["ablate", "zscrgan", "--dataset", "{}", "--seeds", "1"]]


@pytest.mark.parametrize("case", DEGENERATE, ids=[c[0] for c in DEGENERATE])
def test_degenerate_data_is_refused_by_every_command(case, home, capfd, monkeypatch):
    _, change, needle = case
    path = _variant(home.parent, case[0], change)
    before = tree(home)
    for argv in COMMANDS:
        res = cli(home, *[a.format(path) for a in argv], capfd=capfd, monkeypatch=monkeypatch)
        assert_refused(res, needle)
        assert path in res.stderr                                     # names the file
        assert tree(home) == before, argv


def test_degenerate_data_under_an_existing_sweep_or_checkpoint(template, tmp_path, capfd, monkeypatch):
    """select and evaluate load the data a sweep or a checkpoint names: a file made degenerate since is
    refused the same way, before any training or evaluation."""
    h = copy_home(template, tmp_path)
    good = _variant(tmp_path, "good", lambda a, d: None)
    res = cli(h, "train", "ridge", "--dataset", good, "--out", str(tmp_path / "run"), capfd=capfd,
              monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr
    bad = _variant(tmp_path, "bad", _constant_features)
    shutil.copyfile(bad, good)
    meta_file = h / "sweeps" / "base" / "zsexp_sweep.json"
    meta = json.loads(meta_file.read_text())
    meta["dataset"] = meta["trial_meta"]["dataset"] = good
    meta_file.write_text(json.dumps(meta))
    before = tree(h)
    for argv in (["evaluate", str(tmp_path / "run" / "best.pt")], ["select", "base", "--k", "1", "--seeds", "1"],
                 ["ablate", "zscrgan", "--from", "base", "--seeds", "1"]):
        res = cli(h, *argv, capfd=capfd, monkeypatch=monkeypatch)
        assert_refused(res, "`features` is the same vector in every row")
        assert tree(h) == before, argv


# --------------------------------------------------------------------------- 3. the environment
ENVIRONMENT = [
    ("simulate-gpus-text", {"ZSEXP_SIMULATE_GPUS": "lots"}, "$ZSEXP_SIMULATE_GPUS"),
    ("simulate-gpus-huge", {"ZSEXP_SIMULATE_GPUS": "1e9"}, "$ZSEXP_SIMULATE_GPUS"),
    ("omp-threads-0", {"OMP_NUM_THREADS": "0"}, "$OMP_NUM_THREADS"),
    ("omp-threads-huge", {"OMP_NUM_THREADS": "99999999"}, "$OMP_NUM_THREADS"),
    ("mkl-threads-text", {"MKL_NUM_THREADS": "many"}, "$MKL_NUM_THREADS"),
    ("tracking-uri-scheme", {"MLFLOW_TRACKING_URI": "gopher://x"}, "$MLFLOW_TRACKING_URI"),
    ("tracking-uri-empty", {"MLFLOW_TRACKING_URI": " "}, "$MLFLOW_TRACKING_URI"),
    ("tracking-password-newline", {"MLFLOW_TRACKING_PASSWORD": "a\nb"}, "$MLFLOW_TRACKING_PASSWORD"),
    ("http-timeout-negative", {"MLFLOW_HTTP_REQUEST_TIMEOUT": "-5"}, "$MLFLOW_HTTP_REQUEST_TIMEOUT"),
    ("ray-address-garbage", {"RAY_ADDRESS": "not an address"}, "$RAY_ADDRESS"),
    ("ray-auth-mode", {"RAY_AUTH_MODE": "sometimes"}, "$RAY_AUTH_MODE"),
    ("tune-checkpoint-nan", {"TUNE_GLOBAL_CHECKPOINT_S": "nan"}, "$TUNE_GLOBAL_CHECKPOINT_S"),
    ("cuda-visible-shell", {"CUDA_VISIBLE_DEVICES": "0;rm -rf"}, "$CUDA_VISIBLE_DEVICES"),
    ("search-spaces-missing", {"ZSEXP_SEARCH_SPACES": "/nonexistent/spaces"}, "$ZSEXP_SEARCH_SPACES"),
    ("key-file-a-directory", {"ZSEXP_KEY_FILE": "/"}, "$ZSEXP_KEY_FILE"),
    ("fault-hook-garbage", {"ZSEXP_FAULT_KILL": "startup:soon"}, "$ZSEXP_FAULT_KILL"),
]


@pytest.mark.parametrize("case", ENVIRONMENT, ids=[c[0] for c in ENVIRONMENT])
@pytest.mark.parametrize("argv", [["search", "zscrgan", "--trials", "1"], ["status"], ["train", "ridge"]],
                         ids=["search", "status", "train"])
def test_environment_is_checked_before_anything_exists(case, argv, home, capfd, monkeypatch):
    _, env, needle = case
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = tree(home)
    res = cli(home, *argv, capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, needle)
    assert "\nb" not in res.stderr and "a\nb" not in res.stderr      # a credential is not echoed
    assert tree(home) == before


def test_a_home_that_is_a_file_is_refused_as_a_process(tmp_path):
    f = tmp_path / "home-file"
    f.write_text("x")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"ZSEXP_HOME": str(f)}
    for argv in (["status"], ["search", "ridge", "--trials", "1"]):
        res = subprocess.run([sys.executable, "-m", "zsexp.cli", *argv], env=env, capture_output=True, text=True,
                             timeout=120)
        assert_refused(res, "$ZSEXP_HOME")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home-file"]


# --------------------------------------------------------------------------- 4. read-only and full storage
@pytest.fixture()
def mounted(tmp_path):
    """``mount(src, ro=True | size=...)``: a real read-only bind mount of ``src``, or a tiny tmpfs, undone
    after the test.  Needs the right to mount (root, as in CI); refused otherwise."""
    done: list[Path] = []

    def mount(src: Path | None = None, size: str | None = None) -> Path:
        target = tmp_path / f"mnt{len(done)}"
        target.mkdir()
        cmds = ([["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)]] if size else
                [["mount", "--bind", str(src), str(target)], ["mount", "-o", "remount,ro,bind", str(target)]])
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                if done or target not in done:
                    subprocess.run(["umount", str(target)], capture_output=True)
                pytest.skip(f"this machine does not let the tests mount a file system ({r.stderr.strip()[:120]})")
        done.append(target)
        return target

    yield mount
    for t in reversed(done):
        subprocess.run(["umount", "-l", str(t)], capture_output=True)


READ_ONLY = [
    (["resume", "base"], "cannot write"),
    (["resume", "base", "--trials", "2"], "cannot write"),
    (["search", "zscrgan", "--trials", "1"], "cannot write"),
    (["select", "base", "--k", "1", "--seeds", "1"], "cannot write"),
    (["ablate", "zscrgan", "--from", "base", "--seeds", "1"], "cannot write"),
    (["train", "ridge", "--out", "{home}/runs/x"], "cannot write"),
]


def test_read_only_storage_is_found_before_work_and_reading_still_works(template, tmp_path, capfd, monkeypatch,
                                                                        mounted, mlflow_ui_up):
    src = copy_home(template, tmp_path)
    ro = mounted(src)
    before = tree(ro)
    for argv, needle in READ_ONLY:
        res = cli(ro, *[a.format(home=ro) for a in argv], capfd=capfd, monkeypatch=monkeypatch)
        assert_refused(res, needle)
        assert "Read-only file system" in res.stderr
    assert tree(ro) == before
    # where the user only reads, reading works
    res = cli(ro, "status", "base", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0 and "TERMINATED" in res.stdout, res.stderr
    res = cli(ro, "status", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0 and "base" in res.stdout
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"ZSEXP_HOME": str(ro)}
    ui = subprocess.Popen([sys.executable, "-m", "zsexp.cli", "ui", "base", "--port", "5093"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 60 and not mlflow_ui_up(5093):
            time.sleep(0.5)
        assert mlflow_ui_up(5093), "the MLflow UI did not serve a read-only store"
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)


def test_a_full_disk_is_found_before_work(home, capfd, monkeypatch, mounted):
    small = mounted(size="1m")
    res = cli(home, "search", "zscrgan", "--trials", "1", "--storage", str(small / "sweeps"), capfd=capfd,
              monkeypatch=monkeypatch)
    assert_refused(res, "MiB free")
    assert not any(small.iterdir())


# --------------------------------------------------------------------------- 5. a sweep's files are its own
def _link(rel: str):
    def setup(h: Path) -> None:
        d = h / "sweeps" / "base"
        target = next(iter(sorted(d.glob(rel)))) if any(ch in rel for ch in "*?") else d / rel
        outside = h.parent / ("outside-" + target.name)
        shutil.move(target, outside)
        target.symlink_to(outside)
    return setup


def _link_inside(h: Path) -> None:
    d = h / "sweeps" / "base"
    shutil.copyfile(d / "zsexp_sweep.json", d / "copy.json")
    (d / "zsexp_sweep.json").unlink()
    (d / "zsexp_sweep.json").symlink_to("copy.json")


def _fifo(h: Path) -> None:
    os.mkfifo(h / "sweeps" / "base" / "zsexp_progress.0.jsonl")


OWN = [
    ("meta-link-out", _link("zsexp_sweep.json")),
    ("meta-link-inside", _link_inside),
    ("progress-link", _link("zsexp_progress.json")),
    ("signatures-link", _link("zsexp_signatures.json")),
    ("tune-state-link", _link("experiment_state-*.json")),
    ("tuner-link", _link("tuner.pkl")),
    ("journal-link", _link("optuna_journal.log")),
    ("trial-file-link", _link("train_trial_*/result.json")),
    ("marker-link", _link("zsexp_trials/*.json")),
    ("fifo", _fifo),
]


@pytest.mark.parametrize("case", OWN, ids=[c[0] for c in OWN])
def test_a_sweeps_files_must_be_its_own(case, template, tmp_path, capfd, monkeypatch):
    _, setup = case
    h = copy_home(template, tmp_path)
    setup(h)
    before = tree(h, template)
    for argv in (["status", "base"], ["resume", "base"], ["select", "base", "--k", "1", "--seeds", "1"],
                 ["ui", "base", "--port", "5094"], ["search", "zscrgan", "--warm-start", "base", "--name", "w"],
                 ["ablate", "zscrgan", "--from", "base", "--seeds", "1"]):
        res = cli(h, *argv, capfd=capfd, monkeypatch=monkeypatch)
        assert_refused(res, "symbolic link" if "link" in case[0] else "not a regular file")
        assert tree(h, template) == before, argv


ABSENT_HOME_REFUSALS = [
    (["status", "nosuch"], {}, "no sweep"), (["resume", "nosuch"], {}, "no sweep"),
    (["select", "nosuch"], {}, "no sweep"), (["ui", "nosuch"], {}, "no sweep"),
    (["promote", "zsexp-zscrgan-synthetic-tiny"], {}, "no MLflow store"),
    (["ablate", "zscrgan", "--from", "nosuch"], {}, "no sweep"),
    (["search", "zscrgan", "--warm-start", "nosuch"], {}, "no sweep"),
    (["search", "zscrgan"], {"MLFLOW_TRACKING_URI": "bogus://tracking"}, "MLFLOW_TRACKING_URI"),
    (["search", "zscrgan"], {"ZSEXP_SIMULATE_GPUS": "many"}, "ZSEXP_SIMULATE_GPUS"),
    (["status", "nosuch"], {"OMP_NUM_THREADS": "-3"}, "OMP_NUM_THREADS"),
]


@pytest.mark.parametrize("argv,env,needle", ABSENT_HOME_REFUSALS, ids=lambda v: str(v)[:40])
def test_a_refused_command_creates_no_home(argv, env, needle, tmp_path, capfd, monkeypatch):
    """A command refused on a `$ZSEXP_HOME` that does not exist yet (environment cases included) leaves
    it absent: not even an empty folder is made before the refusal."""
    home = tmp_path / "home"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if "MLFLOW_TRACKING_URI" not in env:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = cli(home, *argv, capfd=capfd, monkeypatch=monkeypatch)
    assert_refused(res, needle)
    assert not home.exists(), f"`zsexp {' '.join(argv)}` made {home} before refusing"


def test_reading_commands_create_no_home(tmp_path, capfd, monkeypatch):
    """`zsexp status` on a home that does not exist says there is no sweep and makes nothing."""
    home = tmp_path / "home"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = cli(home, "status", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0 and "no sweeps under" in res.stdout
    assert not home.exists()
