"""Where a run is tracked: the workflow's settings, overridden by the environment."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from agents_pipelines.errors import FileStoreDeprecationWarning
from agents_pipelines.settings import settings
from agents_pipelines.spec.models import MlflowConfig
from agents_pipelines.tracking.mlflow_env import is_file_store

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
    environment = settings()
    uri = environment.mlflow_tracking_uri or config.tracking_uri
    if is_file_store(uri):
        _warn_file_store(uri)
    if ui_url is None:
        ui_url = environment.mlflow_ui_url or (
            uri if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL
        )
    return TrackingSettings(uri, config.experiment_name or flow_name, config, ui_url)


def _warn_file_store(uri: str) -> None:
    # Still allowed (tracking/mlflow_env.py opts in), but users are told how to move their data.
    warnings.warn(
        f"MLflow tracking URI {uri} is a file store, which MLflow keeps in maintenance mode. "
        "Migrate it with `mlflow migrate-filestore` and use sqlite:///mlflow.db "
        "(or a database server) as tracking_uri.",
        FileStoreDeprecationWarning,
        stacklevel=3,
    )
