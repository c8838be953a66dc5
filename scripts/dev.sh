#!/usr/bin/env bash
# Start `dagster dev` (webserver + daemon) on the example workflows, with embedded SQLite
# storage in this folder (see dagster.yaml) and MLflow tracking in ./mlflow.db.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${GOOGLE_API_KEY:-}${GEMINI_API_KEY:-}" && -z "${AGENTS_PIPELINES_LLM_BACKEND:-}" ]]; then
  export AGENTS_PIPELINES_LLM_BACKEND=simulated
  # The rule and the words of `agents-pipelines run` (agents_pipelines.cli.NO_KEY_BANNER).
  cat >&2 <<'BANNER'
==========================================================================================
  NO GOOGLE_API_KEY SET: RUNNING THE *SIMULATED* LLM BACKEND.
  No Gemini calls will be made; token counts and costs are ESTIMATES for the configured
  models. Set GOOGLE_API_KEY (https://aistudio.google.com/apikey) and restart for Gemini,
  or choose a backend yourself: AGENTS_PIPELINES_LLM_BACKEND=simulated|gemini.
==========================================================================================
BANNER
fi

# dagster reads dagster.yaml from DAGSTER_HOME: this folder, so the shipped file applies.
# Run history and event logs go to ./storage, ./history, ./schedules (git-ignored).
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD}"
export AGENTS_PIPELINES_WORKFLOWS_DIR="${AGENTS_PIPELINES_WORKFLOWS_DIR:-$PWD/workflows}"

exec .venv/bin/dagster dev -w workspace.yaml --host "${DAGSTER_HOST:-127.0.0.1}" \
  --port "${DAGSTER_PORT:-3000}"
