"""One writer per sweep: ``search``, ``resume`` and ``select`` hold an exclusive lock for their whole life.

The lock is an ``flock`` on ``<sweeps root>/.<name>.lock`` (beside the sweep's directory, so a new
sweep is locked before its directory exists), removed when its holder ends.  The file records the
holder (host, pid, start time) for the refusal message.  The kernel releases an ``flock`` when its
holder dies, however it dies, so a lock left by a killed driver is never stale: the next command
simply takes it.  The descriptor is not inherited by child processes (Python opens files
close-on-exec), so Ray's processes cannot keep a dead driver's lock alive.

On a shared file system the lock is as good as the file system's ``flock``: NFSv4 and Lustre/GPFS
(with their lock options) implement it across machines; NFSv3 without a lock daemon may grant it on
every machine at once.  Two drivers on different machines of such a file system are not kept apart.

On an object store (``--storage s3://...``) the root is a working copy (``zsexp.workcopy``) and the
lock is a lease in the store (``zsexp.search.lease``): taken, the sweep's working copy is filled from the
store afresh (what the last writer left), every upload checks the lease is still held, and at the end
whatever changed is uploaded before the lease is given back.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path

from zsexp.errors import ZsexpError


class SweepLock:
    """Context manager: ``with SweepLock(root, name, "search"): ...``; refuses at once if held."""

    def __init__(self, root: Path, name: str, command: str, kind: str = "sweep"):
        self.path = Path(root) / f".{name}.lock"
        self.name, self.command, self.kind = name, command, kind
        self._fd: int | None = None
        self.root = Path(root)
        self._lease = None

    def acquire(self) -> SweepLock:
        from zsexp import workcopy

        loc = workcopy.remote(self.root)
        if loc is not None:
            from zsexp.search.lease import Lease

            self._lease = Lease(loc, self.name, self.command, self.kind).acquire()
            folder = self.root / self.name
            try:
                workcopy.pull(folder)          # what the last writer left, read under the lease
            except BaseException:
                self._lease.release()
                self._lease = None
                raise
            workcopy.guard(folder, self._lease.check)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(fd)
                os.close(fd)
                raise ZsexpError(f"{self.kind} {self.name!r} is in use by {holder}; wait for it to end (or stop it) "
                                 f"and try again") from None
            try:           # the holder before us may have removed the file between our open and flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "command": self.command,
                "since": dt.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._lease is not None:
            from zsexp import workcopy

            folder = self.root / self.name
            try:
                if not self._lease.lost and folder.is_dir():
                    workcopy.push(folder)
            finally:
                workcopy.guard(folder, None)
                self._lease.release()
                self._lease = None
            return
        if self._fd is not None:
            self.path.unlink(missing_ok=True)    # nothing is left behind; a waiter re-checks the inode
            os.close(self._fd)                   # closing drops the flock
            self._fd = None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return (f"`zsexp {info.get('command', '?')}` (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
                f"since {info.get('since', '?')})")
    except (OSError, ValueError):
        return "another zsexp process"
