#!/usr/bin/env bash
# An MLflow tracking server on a PostgreSQL backend store, for the whole team.
# Point every Dagster process at it with MLFLOW_TRACKING_URI=http://HOST:5000.
#   MLFLOW_BACKEND_STORE_URI  postgresql://mlflow:secret@db.internal:5432/mlflow (required)
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts go (default ./mlartifacts; s3://... works)
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI to a postgresql:// URL}"
exec "${MLFLOW_BIN:-mlflow}" server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-./mlartifacts}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}"
