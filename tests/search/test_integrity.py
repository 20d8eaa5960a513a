"""Signed sweep state: what storage holds stays verifiable; a foreign key is refused until trusted."""

from __future__ import annotations

import pytest

from tests.helpers import assert_refused, cli, copy_home
from zsexp.errors import ZsexpError

pytestmark = pytest.mark.slow


def test_signatures_cover_what_storage_holds_while_tune_copies_late(tmp_path):
    """Tune's background copy to storage can lag the staging files by several steps: the version storage
    holds stays verifiable however many newer versions the driver records, and so does a version
    copied a few steps late."""
    from zsexp.search import integrity

    d, staging = tmp_path / "sweep", tmp_path / "staging"
    d.mkdir()
    staging.mkdir()
    name = "callback-states-s.pkl"
    (staging / name).write_bytes(b"v0")
    integrity.record(d, {name: staging / name})
    (d / name).write_bytes(b"v0")                      # the copy of version 0 reached storage
    for i in range(1, 3 * integrity.KEEP_DIGESTS):     # many steps while no further copy lands
        (staging / name).write_bytes(f"v{i}".encode())
        integrity.record(d, {name: staging / name})
    assert integrity.check(d) == []                    # storage's version 0 is still signed
    (d / name).write_bytes(f"v{3 * integrity.KEEP_DIGESTS - 5}".encode())   # a copy from 4 steps ago lands
    assert integrity.check(d) == []
    (d / name).write_bytes(b"v")                       # cut short: recognised, never unpickled
    assert integrity.check(d) == [d / name]
    import pickle

    (d / name).write_bytes(pickle.dumps({"planted": True}))
    with pytest.raises(ZsexpError, match="not written by this sweep's driver"):
        integrity.check(d)


def test_trust_storage_accepts_a_moved_sweep(template, tmp_path, capfd, monkeypatch):
    """A sweep signed with another key (another user or machine) is refused, then accepted explicitly."""
    h = copy_home(template, tmp_path)
    (h / "keys" / "sweep-state.key").unlink()               # this "user" has a key of their own
    assert_refused(cli(h, "status", "base", capfd=capfd, monkeypatch=monkeypatch), "--trust-storage")
    res = cli(h, "status", "base", "--trust-storage", capfd=capfd, monkeypatch=monkeypatch)
    assert res.returncode == 0, res.stderr
    assert cli(h, "status", "base", capfd=capfd, monkeypatch=monkeypatch).returncode == 0   # now signed as ours

