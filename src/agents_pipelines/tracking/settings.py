"""Where a run is tracked: the workflow's settings, overridden by the environment."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from agents_pipelines.errors import FileStoreDeprecationWarning
from agents_pipelines.spec.models import MlflowConfig

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
UI_URL_ENV = "AGENTS_PIPELINES_MLFLOW_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class TrackingSettings:
    tracking_uri: str
    experiment_name: str
    config: MlflowConfig
    ui_url: str

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def resolve_settings(
    config: MlflowConfig, flow_name: str, ui_url: str | None = None
) -> TrackingSettings:
    """MLFLOW_TRACKING_URI beats the workflow's tracking_uri, so operators can redirect
    every workflow to a team server without editing files."""
    uri = os.environ.get(TRACKING_URI_ENV) or config.tracking_uri
    if uri.startswith("file:") or ("://" not in uri and ":" not in uri):
        _allow_file_store(uri)
    if uri.startswith(("http://", "https://")):
        _bound_http_retries()
    if ui_url is None:
        ui_url = os.environ.get(UI_URL_ENV) or (
            uri if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL
        )
    return TrackingSettings(uri, config.experiment_name or flow_name, config, ui_url)


# MLflow's HTTP client retries 7 times with exponential backoff by default: minutes per
# call when the tracking server is down, and a run makes several calls. The workflow's
# output is what the user paid for, so tracking gives up sooner. Settings the operator made
# in the environment win.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def _bound_http_retries() -> None:
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _allow_file_store(uri: str) -> None:
    # MLflow 3.17 refuses file stores unless MLFLOW_ALLOW_FILE_STORE is set. Existing users
    # keep working, and are told how to move their data.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    warnings.warn(
        f"MLflow tracking URI {uri} is a file store, which MLflow keeps in maintenance mode. "
        "Migrate it with `mlflow migrate-filestore` and use sqlite:///mlflow.db "
        "(or a database server) as tracking_uri.",
        FileStoreDeprecationWarning,
        stacklevel=3,
    )
