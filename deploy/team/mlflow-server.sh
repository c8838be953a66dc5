#!/usr/bin/env bash
# An MLflow tracking server on a PostgreSQL backend store, for the whole team.
# Point every Dagster process at it with MLFLOW_TRACKING_URI=http://HOST:5000.
# Settings (the README's "Team deployment" section lists them too):
#   MLFLOW_BACKEND_STORE_URI      postgresql://mlflow:secret@db.internal:5432/mlflow (required)
#   MLFLOW_ARTIFACTS_DESTINATION  where artifacts go (default ./mlartifacts; s3://... works)
#   MLFLOW_HOST, MLFLOW_PORT      where it listens (default 127.0.0.1, 5000)
#   MLFLOW_WORKERS                server worker processes (default 4)
#   MLFLOW_BIN                    the mlflow executable (default: mlflow on PATH, else the
#                                 one `make install` put in this repository's .venv)
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI to a postgresql:// URL}"

repo_venv_mlflow="$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/mlflow"
if [[ -z "${MLFLOW_BIN:-}" ]]; then
  if command -v mlflow >/dev/null; then
    MLFLOW_BIN=mlflow
  elif [[ -x "$repo_venv_mlflow" ]]; then
    MLFLOW_BIN="$repo_venv_mlflow"
  else
    echo "mlflow-server.sh: no mlflow on PATH nor at $repo_venv_mlflow." >&2
    echo "  Run 'make install' in the repository, or 'pip install \"agents_pipelines[postgres]\"'," >&2
    echo "  or set MLFLOW_BIN to the mlflow executable." >&2
    exit 1
  fi
fi

exec "$MLFLOW_BIN" server \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-./mlartifacts}" \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}"
