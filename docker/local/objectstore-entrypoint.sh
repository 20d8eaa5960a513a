#!/bin/bash
# SeaweedFS with one S3 identity, MINIO_ROOT_USER / MINIO_ROOT_PASSWORD: requests signed with any other
# key are refused.  The identity file is written at start (never baked into the image or the volume).
# Only the S3 API is reachable from other containers: master, volume, filer and every gRPC port (which
# answer reads and writes of the stored objects without any credential) listen on loopback, the S3
# gateway too, and socat forwards port 9000 of the container's network to it byte for byte (S3
# signatures are checked by the gateway as before).  The container ends when either process does.
set -euo pipefail
if [ "${1:-}" = "serve" ]; then
  : "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
  : "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
  umask 077
  cat > /etc/seaweedfs/s3.json <<JSON
{"identities": [{"name": "admin",
  "credentials": [{"accessKey": "${MINIO_ROOT_USER}", "secretKey": "${MINIO_ROOT_PASSWORD}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  weed server -dir=/data -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 -s3.port=8333 -s3.port.iceberg=0 \
    -s3.port.lance=0 -master.telemetry=false -s3.config=/etc/seaweedfs/s3.json \
    -master.volumeSizeLimitMB=256 -volume.max=64 &
  socat TCP-LISTEN:9000,fork,reuseaddr TCP:127.0.0.1:8333 &
  wait -n
  exit $?
fi
exec "$@"
