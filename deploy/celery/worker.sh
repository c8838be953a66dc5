#!/usr/bin/env bash
# A Celery worker that runs Dagster steps: one per machine, or several with distinct names.
# Usage: deploy/celery/worker.sh NAME [more `celery worker` options, e.g. --concurrency 4]
# It needs the environment every Dagster process of the deployment has (README, "Past one
# machine: Celery"): DAGSTER_HOME (holding deploy/team/dagster.yaml), DAGSTER_POSTGRES_URL,
# AGENTS_PIPELINES_CELERY_BROKER and _BACKEND, AGENTS_PIPELINES_EXECUTOR=celery,
# AGENTS_PIPELINES_WORKFLOWS_DIR, MLFLOW_TRACKING_URI and GOOGLE_API_KEY.
#   AGENTS_PIPELINES_CELERY_CONFIG  the Celery settings (default: celery.yaml beside this script)
#   DAGSTER_CELERY_BIN              the dagster-celery executable (default: the one on PATH, else
#                                   the one `make install` put in this repository's .venv)
set -euo pipefail
name="${1:?usage: deploy/celery/worker.sh NAME [celery worker options]}"
shift
: "${DAGSTER_HOME:?set DAGSTER_HOME: dagster-celery keeps the worker settings it writes there}"
: "${AGENTS_PIPELINES_CELERY_BROKER:?set AGENTS_PIPELINES_CELERY_BROKER, e.g. amqp://guest:guest@127.0.0.1:5672//}"
: "${AGENTS_PIPELINES_CELERY_BACKEND:?set AGENTS_PIPELINES_CELERY_BACKEND, e.g. redis://127.0.0.1:6379/1}"

here="$(cd "$(dirname "$0")" && pwd)"
venv_bin="$here/../../.venv/bin"
if [[ -z "${DAGSTER_CELERY_BIN:-}" ]]; then
  if command -v dagster-celery >/dev/null; then
    DAGSTER_CELERY_BIN=dagster-celery
  elif [[ -x "$venv_bin/dagster-celery" ]]; then
    DAGSTER_CELERY_BIN="$venv_bin/dagster-celery"
    export PATH="$venv_bin:$PATH"  # dagster-celery starts `celery` from PATH
  else
    echo "worker.sh: no dagster-celery on PATH nor at $venv_bin." >&2
    echo "  Run 'make install' in the repository, or 'pip install \"agents_pipelines[postgres,celery]\"'," >&2
    echo "  or set DAGSTER_CELERY_BIN to the dagster-celery executable." >&2
    exit 1
  fi
fi
export AGENTS_PIPELINES_CELERY_CONFIG="${AGENTS_PIPELINES_CELERY_CONFIG:-$here/celery.yaml}"

# -A: dagster-celery's app, whose task runs one step. -i: import our runtime (Dagster, LangGraph,
# MLflow, the Gemini client) once in the worker, before it forks its pool processes, instead of
# once in each of them on its first step.
exec "$DAGSTER_CELERY_BIN" worker start --name "$name" --app dagster_celery.app \
  --config-yaml "$AGENTS_PIPELINES_CELERY_CONFIG" --includes agents_pipelines.runner -- "$@"
