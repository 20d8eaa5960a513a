"""One writer per sweep on an object store, without ``flock``: a lease object renewed by its holder.

The lease is the object ``<storage>/.<name>.lease`` (beside the sweep's prefix, like the local lock
file).  It is created with a conditional write (``If-None-Match: *``): of two drivers that start at
once, exactly one succeeds, wherever they run.  Its holder rewrites it every ``TTL / 4`` seconds with
``If-Match`` on the version it wrote last, so a holder whose lease was taken over learns it at its next
renewal and stops writing (its working copy refuses every later upload).

A command that finds the lease held watches it: a renewal means its holder is alive, and the command
is refused in one line (within ``TTL / 4`` seconds and the store's round trip).  A driver that died
stops renewing.  A lease not renewed for more than ``TTL`` seconds is stale, judged
on the store's own clock (its ``Date`` header less the object's ``Last-Modified``, both in whole
seconds: no clock of a driver is compared with another's), and the next command takes it over with
``If-Match`` on the stale version: of two that try at once, one wins.  ``TTL`` is
``$ZSEXP_LEASE_TTL_S`` (default 60 s); a takeover is possible between ``TTL`` and ``TTL + 1`` seconds
after the holder's last renewal (measured in ``docs/benchmarks.md``).

A holder that could not renew for ``0.75 * TTL`` (cut from the store) counts itself as having lost the
lease and stops writing, before anyone may take it over.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid

from zsexp import objectstore as store
from zsexp.errors import ZsexpError

DEFAULT_TTL_S = 60.0


def ttl_s() -> float:
    raw = os.environ.get("ZSEXP_LEASE_TTL_S", "")
    try:
        value = float(raw) if raw else DEFAULT_TTL_S
    except ValueError:
        raise ZsexpError(f"$ZSEXP_LEASE_TTL_S={raw!r}: not a number of seconds") from None
    if not 1.0 <= value <= 3600.0:
        raise ZsexpError(f"$ZSEXP_LEASE_TTL_S={raw!r}: must be between 1 and 3600 seconds")
    return value


class Lease:
    """``Lease(root, name, command, kind).acquire()`` ... ``release()``; refuses at once if held."""

    HOLD = 0.75         # a holder not renewed for this part of TTL stops writing: before anyone may take over

    def __init__(self, root: store.Location, name: str, command: str, kind: str = "sweep"):
        self.root, self.rel = root, f".{name}.lease"
        self.name, self.command, self.kind = name, command, kind
        self.ttl = ttl_s()
        self.token = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost: str | None = None
        self.took_over: dict | None = None
        self._beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = 0.0

    def _body(self) -> bytes:
        self._beats += 1          # a new body each time, so each version has its own ETag
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                           "token": self.token, "beat": self._beats, "ttl_s": self.ttl,
                           "since": dt.datetime.now().isoformat(timespec="seconds")}).encode()

    def acquire(self) -> Lease:
        """Take the lease: at once when free; when held, watch it -- a renewal (its holder is alive) refuses
        within ``TTL / 4`` and a second, no renewal for more than ``TTL`` (its holder died) takes it over."""
        announced = False
        while self.etag is None:
            self.etag = store.put_conditional(self.root, self.rel, self._body(), None)
            if self.etag is not None:
                break
            first = store.head(self.root, self.rel)
            held = first
            who, holder_ttl = self._holder()
            ttl = max(self.ttl, holder_ttl)             # a holder given a longer TTL is judged by it
            deadline = time.monotonic() + ttl + 5
            while held is not None and held["etag"] == first["etag"] and held["age_s"] <= ttl:
                if not announced:
                    print(f"[{self.name}] held by {who}, renewed {held['age_s']:.0f} s ago: watching "
                          f"whether its driver is alive (a live one renews every {self.ttl / 4:.0f} s); taken over "
                          f"after {ttl:.0f} s without a renewal", flush=True)
                    announced = True
                if time.monotonic() > deadline:
                    break
                time.sleep(min(0.5, self.ttl / 8))
                held = store.head(self.root, self.rel)
            if held is None:                      # given back meanwhile: try again
                continue
            if held["etag"] != first["etag"] or held["age_s"] <= ttl:
                raise ZsexpError(f"{self.kind} {self.name!r} is in use by {self._holder()[0]}, whose lease is renewed "
                                 f"as it runs; wait for it to end (or stop it) and try again")
            self._take_over(held)
        self._renewed = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name=f"zsexp-lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, held: dict) -> None:
        self.took_over = {"holder": self._holder()[0], "age_s": held["age_s"]}
        self.etag = store.put_conditional(self.root, self.rel, self._body(), held["etag"])
        if self.etag is None:
            raise ZsexpError(f"{self.kind} {self.name!r}: another command took over its stale lease at the same "
                             f"moment; it is in use by {self._holder()[0]}")
        print(f"[{self.name}] took over the lease of {self.took_over['holder']}, not renewed for "
              f"{held['age_s']:.0f} s (its driver is gone)", flush=True)

    def _holder(self) -> tuple[str, float]:
        """Who holds the lease (for messages) and the TTL it was taken with (0 when unreadable): one read."""
        try:
            info = json.loads(store.get(self.root, self.rel, limit=64 << 10) or b"{}")
            who = (f"`zsexp {info.get('command', '?')}` (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
                   f"since {info.get('since', '?')})")
        except (ZsexpError, ValueError, AttributeError):
            return "another zsexp process", 0.0
        try:
            return who, min(max(float(info.get("ttl_s", 0)), 0.0), 3600.0)
        except (ValueError, TypeError, AttributeError):
            return who, 0.0

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                etag = store.put_conditional(self.root, self.rel, self._body(), self.etag)
            except ZsexpError as exc:             # the store did not answer: try again at the next beat
                if time.monotonic() - self._renewed > self.HOLD * self.ttl:
                    self.lost = f"the object store did not answer for {self.ttl:.0f} s ({exc})"
                    return
                continue
            if etag is None:
                self.lost = "another command took it over"
                return
            self.etag, self._renewed = etag, time.monotonic()

    def check(self) -> None:
        """Raise once the lease is lost: nothing more may be written for this sweep."""
        if self.lost is None and self._thread is not None and time.monotonic() - self._renewed > self.HOLD * self.ttl:
            self.lost = f"not renewed for {self.HOLD * self.ttl:.0f} s"
        if self.lost:
            raise ZsexpError(f"{self.kind} {self.name!r}: this driver lost its lease ({self.lost}); it stops "
                             f"writing. `zsexp status {self.name}` shows who holds it now")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self.etag and not self.lost:
            try:
                store.delete(self.root, self.rel, self.etag)      # only while it is still ours
            except ZsexpError:
                pass                                              # it goes stale and is taken over
        self.etag = None
