"""Object-store locations (``s3://BUCKET/PREFIX``): where a cluster whose machines share only the network
keeps its sweeps, selections, ablations and datasets.

One client for zsexp's own objects: boto3, the AWS SDK.  It has what the one-writer lease needs,
conditional writes (``If-None-Match`` / ``If-Match``), which pyarrow's file systems do not expose.  Ray
Tune keeps its own state and the trials' checkpoints through pyarrow's ``S3FileSystem``
(:func:`arrow_fs`), built from the same settings.

Settings are read the way the AWS SDKs read them, on every machine that runs a driver or a trial:

* endpoint: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (an S3-compatible server: SeaweedFS,
  MinIO, Ceph); unset means AWS itself;
* credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or any source of boto3's chain);
* region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else ``us-east-1``.

A location's bucket and prefix are checked once (:func:`parse`): no ``..``, no empty segment, only
letters, digits, ``.``, ``_``, ``-`` in the prefix, so no name from a file can reach another prefix.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zsexp.errors import ZsexpError

SCHEMES = ("s3",)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
MAX_OBJECT = 256 << 20          # an object zsexp reads into memory (JSON, journals, markers), at most


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and "://" in value


@dataclass(frozen=True)
class Location:
    """A checked ``s3://bucket/prefix``; ``prefix`` has no leading or trailing slash."""

    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, rel: str = "") -> str:
        """The object key of ``rel`` (a relative path made by zsexp from checked names) under the prefix."""
        rel = rel.strip("/")
        return "/".join(p for p in (self.prefix, rel) if p)

    def child(self, rel: str) -> Location:
        return Location(self.bucket, self.key(rel))

    def arrow_path(self) -> str:
        """The location as pyarrow's file systems (and Ray Tune with ``storage_filesystem``) name it."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def __str__(self) -> str:
        return self.uri


def parse(value: str, what: str = "--storage") -> Location:
    """``s3://BUCKET/PREFIX`` as a :class:`Location`; anything else is one clear error."""
    scheme, sep, rest = str(value).partition("://")
    if not sep:
        raise ZsexpError(f"{what} {value!r}: not an object-store URI (s3://BUCKET/PREFIX)")
    if scheme.lower() not in SCHEMES:
        raise ZsexpError(f"{what} {value!r}: scheme {scheme!r} is not supported; use a file system path or "
                         f"s3://BUCKET/PREFIX (any S3-compatible server, through AWS_ENDPOINT_URL_S3)")
    if any(c in rest for c in "?#\\ \t\n") or "%" in rest:
        raise ZsexpError(f"{what} {value!r}: a query, fragment, escape or space is not allowed in a storage URI")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ZsexpError(f"{what} {value!r}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, "
                         f"digits, '.' and '-')")
    prefix = prefix.rstrip("/")
    if not prefix:
        raise ZsexpError(f"{what} {value!r}: give a prefix inside the bucket (s3://{bucket}/PREFIX); zsexp does "
                         f"not write at a bucket's root")
    for seg in prefix.split("/"):
        if seg in ("", ".", "..") or not _SEGMENT.fullmatch(seg):
            raise ZsexpError(f"{what} {value!r}: path segment {seg!r} is not allowed (no '..', no empty "
                             f"segment; letters, digits, '.', '_' and '-')")
    return Location(bucket, prefix)


def endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def where() -> str:
    return f"the object store at {endpoint()}" if endpoint() else "AWS S3"


_LOCAL = threading.local()


def client() -> Any:
    """A boto3 S3 client for the current settings (one per thread and settings: boto3 clients are cheap
    to share but settings may change between tests)."""
    settings = (endpoint(), region(), os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"))
    cached = getattr(_LOCAL, "client", None)
    if cached is not None and cached[0] == settings:
        return cached[1]
    try:
        import boto3
        from botocore.config import Config
    except ImportError:  # pragma: no cover - boto3 is a dependency
        raise ZsexpError("an s3:// location needs boto3 (pip install boto3)") from None
    c = boto3.session.Session().client(
        "s3", endpoint_url=endpoint(), region_name=region(),
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"},
                      s3={"addressing_style": "path"} if endpoint() else None))
    _LOCAL.client = (settings, c)
    return c


def error(exc: BaseException, loc: Location | str, doing: str) -> ZsexpError:
    """One line for a failed store call: what was done, where, and what to fix."""
    from botocore import exceptions as bx

    at = f"{loc}" if isinstance(loc, str) else loc.uri
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                        bx.ConnectionClosedError)):
        return ZsexpError(f"{at}: cannot reach {where()} while {doing} ({type(exc).__name__}); check "
                          f"AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL and that the server runs")
    if isinstance(exc, bx.NoCredentialsError):
        return ZsexpError(f"{at}: no credentials for {where()}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "")) or "?"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and doing.startswith("checking the bucket")):
            return ZsexpError(f"{at}: bucket {at.split('/')[2]!r} does not exist on {where()}; create it first")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return ZsexpError(f"{at}: {where()} refused the credentials ({code}); check AWS_ACCESS_KEY_ID and "
                              f"AWS_SECRET_ACCESS_KEY")
        if code in ("AccessDenied", "403", "Forbidden") or status == 403:
            return ZsexpError(f"{at}: {where()} denied {doing} (AccessDenied); these credentials may not do it")
        return ZsexpError(f"{at}: {where()} answered {code} (HTTP {status}) while {doing}")
    if isinstance(exc, bx.BotoCoreError):
        return ZsexpError(f"{at}: {doing} failed on {where()} ({type(exc).__name__}: {str(exc)[:200]})")
    return ZsexpError(f"{at}: {doing} failed ({type(exc).__name__}: {str(exc)[:200]})")


def _call(loc: Location | str, doing: str, fn, *args, **kwargs) -> Any:
    from botocore import exceptions as bx

    try:
        return fn(*args, **kwargs)
    except (bx.BotoCoreError, bx.ClientError) as exc:
        raise error(exc, loc, doing) from None


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


NOT_FOUND = ("NoSuchKey", "404", "NotFound")
CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "NoSuchKey", "404")
_ABSENT = object()


def _request(loc: Location, rel: str, doing: str, method: str, absent: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """One call about the object ``rel``: its answer, :data:`_ABSENT` when the store answers one of the
    ``absent`` codes, else one clear error."""
    from botocore import exceptions as bx

    try:
        return getattr(client(), method)(Bucket=loc.bucket, Key=loc.key(rel), **kwargs)
    except bx.ClientError as exc:
        if _code(exc) in absent:
            return _ABSENT
        raise error(exc, loc.child(rel), doing) from None
    except bx.BotoCoreError as exc:
        raise error(exc, loc.child(rel), doing) from None


def get(loc: Location, rel: str, limit: int = MAX_OBJECT) -> bytes | None:
    """The bytes of ``rel`` (None when absent); an object over ``limit`` is refused unread."""
    r = _request(loc, rel, "reading", "get_object", NOT_FOUND)
    if r is _ABSENT:
        return None
    if int(r.get("ContentLength") or 0) > limit:
        r["Body"].close()
        raise ZsexpError(f"{loc.child(rel)}: larger than {limit >> 20} MiB; not an object zsexp wrote: refused")
    return _call(loc.child(rel), "reading", r["Body"].read)


def put(loc: Location, rel: str, data: bytes) -> None:
    _request(loc, rel, "writing", "put_object", Body=data)


def put_file(loc: Location, rel: str, path: str) -> None:
    with open(path, "rb") as f:
        data = f.read()
    put(loc, rel, data)


def put_conditional(loc: Location, rel: str, data: bytes, etag: str | None) -> str | None:
    """Write ``rel`` only if it does not exist (``etag`` None) or still has ``etag``; its new ETag, or
    None when the condition failed (someone else wrote or removed it first)."""
    cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    r = _request(loc, rel, "writing", "put_object", CONDITION_FAILED, Body=data, **cond)
    return None if r is _ABSENT else r["ETag"]


def head(loc: Location, rel: str) -> dict[str, Any] | None:
    """ETag, size and age (the server's clock: its ``Date`` less the object's ``Last-Modified``, seconds)."""
    from email.utils import parsedate_to_datetime

    r = _request(loc, rel, "reading", "head_object", NOT_FOUND)
    if r is _ABSENT:
        return None
    date = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    age = (parsedate_to_datetime(date) - r["LastModified"]).total_seconds() if date else 0.0
    return {"etag": r["ETag"], "size": int(r.get("ContentLength") or 0), "age_s": max(0.0, age)}


def delete(loc: Location, rel: str, etag: str | None = None) -> bool:
    """Remove ``rel`` (with ``etag``: only while it still has it); False when the condition failed."""
    cond = {"IfMatch": etag} if etag else {}
    absent = ("PreconditionFailed", "412", "NoSuchKey", "404") if etag else ()
    return _request(loc, rel, "removing", "delete_object", absent, **cond) is not _ABSENT


def plain_relative(rel: str, depth: int = 4) -> bool:
    """``rel`` (an object name read from the store) can become a local path as it is: at most ``depth``
    plain segments, none empty, ``.``, ``..`` or holding a NUL, none longer than 255 characters."""
    parts = rel.split("/")
    return len(parts) <= depth and all(p not in ("", ".", "..") and "\x00" not in p and len(p) <= 255
                                       for p in parts)


def listing(loc: Location) -> Iterator[tuple[str, int, str, float]]:
    """(path relative to the prefix, size, ETag, last modified as a POSIX time) of every object under ``loc``."""
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key() + "/")
    cut = len(loc.key()) + 1
    try:
        for page in pages:
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/"):          # a folder marker (pyarrow and some servers write them)
                    continue
                when = obj.get("LastModified")
                yield (obj["Key"][cut:], int(obj.get("Size") or 0), str(obj.get("ETag", "")),
                       when.timestamp() if when is not None else 0.0)
    except Exception as exc:  # noqa: BLE001 - botocore's errors, raised while paging
        raise error(exc, loc, "listing") from None


def folders(loc: Location) -> list[str]:
    """The names of the 'folders' directly under ``loc`` (common prefixes)."""
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.key() + "/",
                                                               Delimiter="/")
    cut = len(loc.key()) + 1
    try:
        return sorted(p["Prefix"][cut:].rstrip("/") for page in pages for p in page.get("CommonPrefixes", []))
    except Exception as exc:  # noqa: BLE001
        raise error(exc, loc, "listing") from None


def is_empty(loc: Location) -> bool:
    r = _call(loc, "listing", client().list_objects_v2, Bucket=loc.bucket, Prefix=loc.key() + "/", MaxKeys=1)
    return not r.get("Contents")


def check(loc: Location, write: bool, what: str = "--storage") -> None:
    """Before anything is written: the endpoint answers, the credentials are accepted, the bucket exists,
    and (``write``) these credentials may write under the prefix.  The write probe is an object put and
    removed at once; nothing stays behind."""
    import uuid

    c = client()           # a listing, not HEAD: its answer carries the error code (a HEAD's has no body)
    _call(loc, "checking the bucket", c.list_objects_v2, Bucket=loc.bucket, Prefix=loc.key() + "/", MaxKeys=1)
    if write:
        probe = f".zsexp-probe-{uuid.uuid4().hex}"
        put(loc, probe, b"")
        delete(loc, probe)


@functools.lru_cache(maxsize=8)
def _arrow_fs(ep: str | None, reg: str) -> Any:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": reg}
    if ep:
        scheme, _, host = ep.partition("://")
        kwargs.update(endpoint_override=host or ep, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)


def arrow_fs() -> Any:
    """pyarrow's S3 file system for Ray Tune (credentials from each machine's environment: none are
    stored in the object, so none travel with it to the trials)."""
    return _arrow_fs(endpoint(), region())
