"""Probe listening ports from a container on the stack's network, without any credential.

    docker run --rm --network zsexp_default -v $PWD/tests/stack/probe_ports.py:/tmp/p.py:ro zsexp:0.1.0 \
        python /tmp/p.py '[["HOST", PORT], ...]'

For each target: whether TCP connects; an HTTP ``GET /metrics`` (200 means an unauthenticated read, and
``prometheus`` says whether it was Prometheus text); gRPC calls of Ray's own services with no token, where
``UNAUTHENTICATED`` means the port checks Ray's token and ``UNIMPLEMENTED`` that it serves another service;
and, for a port that speaks neither, a Postgres login without a password.  One JSON line per target.  Used to
measure the ports table of docs/stack.md; every call carries an empty request, which reads or changes
nothing on a port that checks the token.
"""

import json
import socket
import sys
import urllib.error
import urllib.request

import grpc

# one call of each of Ray's gRPC services that listen beyond a node's loopback: GCS, raylet, core workers
# (drivers and workers), the dashboard agent's reporter and log services, the object manager and the
# client server (an empty request: nothing is created, pulled or changed)
READS = ("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo", "/ray.rpc.InternalKVGcsService/InternalKVKeys",
         "/ray.rpc.JobInfoGcsService/GetAllJobInfo", "/ray.rpc.NodeManagerService/GetNodeStats",
         "/ray.rpc.CoreWorkerService/GetCoreWorkerStats", "/ray.rpc.LogService/ListLogs",
         "/ray.rpc.ReporterService/HealthCheck", "/ray.rpc.ObjectManagerService/Pull",
         "/ray.rpc.RayletDriver/ClusterInfo")


def probe(host: str, port: int) -> dict:
    row: dict = {"target": f"{host}:{port}"}
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return {**row, "tcp": f"closed ({type(exc).__name__})"}
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=4) as r:
            row["http"] = r.status
            row["prometheus"] = r.read(4096).lstrip().startswith((b"# HELP", b"# TYPE"))
    except urllib.error.HTTPError as exc:
        row["http"] = exc.code
    except Exception as exc:  # noqa: BLE001 - not HTTP
        row["http"] = type(exc).__name__
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        for method in READS:
            call = ch.unary_unary(method, request_serializer=lambda x: x, response_deserializer=lambda x: x)
            try:
                row[method.rsplit("/", 1)[1]] = f"OK {len(call(b'', timeout=4))} bytes"
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE):
                    row[method.rsplit("/", 1)[1]] = exc.code().name
    if not isinstance(row["http"], int) and len(row) == 2:         # neither HTTP nor gRPC: Postgres?
        row["postgres"] = _postgres(host, port)
    return row


def _postgres(host: str, port: int) -> str:
    """A Postgres login with no password: the server's answer (or why it was not Postgres)."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 not installed"
    try:
        psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres", password="", connect_timeout=4)
        return "OK"
    except psycopg2.OperationalError as exc:
        return str(exc).strip().splitlines()[-1][:120]


if __name__ == "__main__":
    for host, port in json.loads(sys.argv[1]):
        print(json.dumps(probe(host, int(port))), flush=True)
