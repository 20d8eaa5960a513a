"""A dataset given as an object-store URI: ``s3://BUCKET/PREFIX/FILE.npz`` or a folder (xlsa17, UCI digits).

Every process that needs it (the driver, and each trial on whatever machine it runs) downloads it into
its own cache (``zsexp-datasets-UID`` in the system's temporary folder, or ``$ZSEXP_DATA_CACHE``; mode
0700), named by the URI and the objects' ETags and sizes, so a changed dataset is fetched again and an
unchanged one once per machine.  A download lands in a temporary folder renamed into place when whole:
two trials of one machine never read half a file.  Then it is loaded, bounded and fingerprinted by the
same loaders as a local path, so the sweep's fingerprint check covers it on every machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from zsexp import objectstore
from zsexp.errors import ZsexpError

MAX_DATASET = 8 << 30           # a dataset folder holds at most this much
MAX_FILES = 10_000


def cache_root() -> Path:
    given = os.environ.get("ZSEXP_DATA_CACHE")
    root = Path(given) if given else Path(tempfile.gettempdir()) / f"zsexp-datasets-{os.getuid()}"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = root.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ZsexpError(f"{root}: the dataset cache must belong to you with mode 0700; fix it with "
                         f"`chmod 700 {root}`")
    return root


def fetch(uri: str) -> Path:
    """The local copy of the dataset at ``uri`` (a file for ``.npz``, else a folder)."""
    loc = objectstore.parse(uri, "dataset")
    single = loc.prefix.endswith(".npz")
    if single:
        parent = objectstore.Location(loc.bucket, loc.prefix.rpartition("/")[0])
        name = loc.prefix.rpartition("/")[2]
        objects = [(r, n, e) for r, n, e, _ in objectstore.listing(parent) if r == name]
    else:
        parent, name = loc, ""
        objects = [(r, n, e) for r, n, e, _ in objectstore.listing(loc)]
    base = loc.prefix.rpartition("/")[2]                 # the folder keeps its name (the dataset's name)
    if not objects:
        raise ZsexpError(f"dataset {uri}: no such object in the store (a .npz file, or a folder of an xlsa17 or "
                         f"UCI digits dataset)")
    if len(objects) > MAX_FILES or sum(n for _, n, _ in objects) > MAX_DATASET:
        raise ZsexpError(f"dataset {uri}: more than {MAX_FILES} objects or {MAX_DATASET >> 30} GiB; not a dataset "
                         f"zsexp loads")
    for r, _, _ in objects:
        if not objectstore.plain_relative(r):
            raise ZsexpError(f"dataset {uri}: object {r[:200]!r} is not a plain relative name; refused")
    tag = hashlib.sha256(repr((uri, sorted(objects))).encode()).hexdigest()[:24]
    root = cache_root()
    final = root / tag
    if not final.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
        try:
            for r, _, _ in objects:
                data = objectstore.get(parent, r, limit=MAX_DATASET)
                target = staging / (r if single else f"{base}/{r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data or b"")
            try:
                os.rename(staging, final)
            except OSError:               # another process of this machine fetched it first
                pass
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final / (name if single else base)
