#!/bin/sh
# One image, several roles (docker/compose.yaml):
#   mlflow-server  MLflow tracking server: Postgres backend, artifacts proxied to S3 (MinIO), basic auth
#   ray-head       Ray head node (GCS on RAY_PORT, dashboard / job API on 8265)
#   ray-worker     Ray worker joining RAY_HEAD_ADDRESS with the GPUs the container sees
#   anything else  run as a command (e.g. `zsexp search cmgan ...`)
set -eu

case "${1:-}" in
  mlflow-server)
    : "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI}"
    : "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION}"
    : "${MLFLOW_ADMIN_USERNAME:?set MLFLOW_ADMIN_USERNAME}"
    : "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD}"
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
    exec mlflow server --app-name basic-auth \
      --backend-store-uri "${MLFLOW_BACKEND_STORE_URI}" \
      --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" \
      --host 0.0.0.0 --port "${MLFLOW_PORT:-5000}"
    ;;
  ray-head)
    exec ray start --head --block --port="${RAY_PORT:-6379}" --dashboard-host=0.0.0.0 \
      --num-gpus="${RAY_HEAD_GPUS:-0}" --disable-usage-stats
    ;;
  ray-worker)
    : "${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS (host:port of the Ray head)}"
    exec ray start --block --address="${RAY_HEAD_ADDRESS}" --disable-usage-stats
    ;;
  *)
    exec "$@"
    ;;
esac
