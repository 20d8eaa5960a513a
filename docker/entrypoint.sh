#!/bin/sh
# One image, several roles (docker/compose.yaml):
#   mlflow-server  MLflow tracking server: Postgres backend, artifacts proxied to S3, basic auth
#   ray-head       Ray head node (GCS on RAY_PORT, dashboard / job API on 8265), token authentication
#   ray-worker     Ray worker joining RAY_HEAD_ADDRESS with the GPUs the container sees
#   s3-bucket      create MLFLOW_BUCKET (and ZSEXP_BUCKET, zsexp's state) on the S3 store at
#                  MLFLOW_S3_ENDPOINT_URL if they are missing
#   anything else  run as a command (e.g. `zsexp search cmgan ...`)
# A role whose secrets are still the example's change-me values is refused (exit 2): the committed
# docker/.env.example never runs a stack.
set -eu

refuse_placeholders() {
  role=$1
  shift
  for var in "$@"; do
    eval "value=\${$var:-}"
    case "$value" in
      *change-me*)
        echo "zsexp-entrypoint: error: $role: $var is still the example's change-me value; set a real secret in docker/.env (make stack-env writes fresh ones)" >&2
        exit 2
        ;;
    esac
  done
}

require_ray_token() {
  if [ "${RAY_AUTH_MODE:-}" != "token" ] || [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    echo "zsexp-entrypoint: error: $1: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (an open Ray job API runs anyone's code)" >&2
    exit 2
  fi
}

case "${1:-}" in
  mlflow-server)
    : "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
    : "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION}"
    : "${MLFLOW_ADMIN_USERNAME:?set MLFLOW_ADMIN_USERNAME}"
    : "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD}"
    refuse_placeholders mlflow-server MLFLOW_ADMIN_PASSWORD MLFLOW_BACKEND_STORE_URI AWS_SECRET_ACCESS_KEY \
      MLFLOW_FLASK_SERVER_SECRET_KEY
    # one secret, one purpose: the key that signs the server's sessions is not the admin's password
    if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ] || [ "${MLFLOW_FLASK_SERVER_SECRET_KEY}" = "${MLFLOW_ADMIN_PASSWORD}" ]; then
      echo "zsexp-entrypoint: error: mlflow-server: MLFLOW_FLASK_SERVER_SECRET_KEY must be set and differ from MLFLOW_ADMIN_PASSWORD (make stack-env adds MLFLOW_FLASK_SECRET_KEY to docker/.env)" >&2
      exit 2
    fi
    # the basic-auth app reads its admin account from an ini file; written at start, never baked in
    umask 077
    cat > /etc/mlflow/basic_auth.ini <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_ADMIN_USERNAME}
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    export MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini
    # the backend store URI holds the database password: mlflow reads it from MLFLOW_BACKEND_STORE_URI
    # (never an argument, which every process of the host can read)
    exec mlflow server --app-name basic-auth \
      --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" \
      --host 0.0.0.0 --port "${MLFLOW_PORT:-5000}" \
      --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
      ${MLFLOW_SERVER_ARGS:-}
    ;;
  ray-head)
    refuse_placeholders ray-head RAY_AUTH_TOKEN MLFLOW_TRACKING_PASSWORD ZSEXP_STATE_KEY AWS_SECRET_ACCESS_KEY
    require_ray_token ray-head
    set -- --head --block --port="${RAY_PORT:-6379}" --dashboard-host=0.0.0.0 \
      --num-gpus="${RAY_HEAD_GPUS:-0}" --disable-usage-stats
    [ -n "${RAY_NUM_CPUS:-}" ] && set -- "$@" --num-cpus="${RAY_NUM_CPUS}"
    [ -n "${RAY_OBJECT_STORE_MEMORY:-}" ] && set -- "$@" --object-store-memory="${RAY_OBJECT_STORE_MEMORY}"
    exec ray start "$@"
    ;;
  ray-worker)
    : "${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS (host:port of the Ray head)}"
    refuse_placeholders ray-worker RAY_AUTH_TOKEN MLFLOW_TRACKING_PASSWORD ZSEXP_STATE_KEY AWS_SECRET_ACCESS_KEY
    require_ray_token ray-worker
    set -- --block --address="${RAY_HEAD_ADDRESS}" --disable-usage-stats
    [ -n "${RAY_NUM_CPUS:-}" ] && set -- "$@" --num-cpus="${RAY_NUM_CPUS}"
    [ -n "${RAY_OBJECT_STORE_MEMORY:-}" ] && set -- "$@" --object-store-memory="${RAY_OBJECT_STORE_MEMORY}"
    exec ray start "$@"
    ;;
  s3-bucket)
    : "${MLFLOW_S3_ENDPOINT_URL:?set MLFLOW_S3_ENDPOINT_URL}"
    : "${MLFLOW_BUCKET:?set MLFLOW_BUCKET}"
    refuse_placeholders s3-bucket AWS_SECRET_ACCESS_KEY
    exec python - <<'PY'
import os, time
import boto3, botocore.exceptions
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"], region_name="us-east-1")
wanted = [b for b in (os.environ["MLFLOW_BUCKET"], os.environ.get("ZSEXP_BUCKET")) if b]
for attempt in range(30):
    try:
        have = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
        for bucket in wanted:
            if bucket not in have:
                s3.create_bucket(Bucket=bucket)
                print(f"s3-bucket: created {bucket}")
            else:
                print(f"s3-bucket: {bucket} exists")
        break
    except botocore.exceptions.EndpointConnectionError:
        time.sleep(2)
else:
    raise SystemExit(f"s3-bucket: {os.environ['MLFLOW_S3_ENDPOINT_URL']} did not answer")
PY
    ;;
  *)
    exec "$@"
    ;;
esac
