#!/bin/sh
# SeaweedFS with one S3 identity, MINIO_ROOT_USER / MINIO_ROOT_PASSWORD: requests signed with any other
# key are refused.  The identity file is written at start (never baked into the image or the volume).
set -eu
if [ "${1:-}" = "serve" ]; then
  : "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
  : "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
  umask 077
  cat > /etc/seaweedfs/s3.json <<JSON
{"identities": [{"name": "admin",
  "credentials": [{"accessKey": "${MINIO_ROOT_USER}", "secretKey": "${MINIO_ROOT_PASSWORD}"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  exec weed server -dir=/data -ip=127.0.0.1 -ip.bind=0.0.0.0 -s3 -s3.port=9000 \
    -s3.config=/etc/seaweedfs/s3.json -master.volumeSizeLimitMB=256 -volume.max=64
fi
exec "$@"
