"""Experiment ids by (tracking URI, experiment name): one lookup per process, not per run.

Kept in the process registry (agents_pipelines.registry): MLflow's client is the
process's, so its experiment ids are too."""

from __future__ import annotations

from typing import Any

from agents_pipelines.registry import process_registry


def is_cached(tracking_uri: str, name: str) -> bool:
    return (tracking_uri, name) in process_registry().experiment_ids


def forget(tracking_uri: str, name: str) -> None:
    """Look the experiment up again next time (it may have been deleted and made anew)."""
    process_registry().experiment_ids.pop((tracking_uri, name), None)


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, made if missing. A deleted one is not cached."""
    from mlflow.exceptions import MlflowException

    key = (tracking_uri, name)
    known_ids = process_registry().experiment_ids
    if (known := known_ids.get(key)) is not None:
        return known
    if (experiment := client.get_experiment_by_name(name)) is not None:
        if experiment.lifecycle_stage != "deleted":
            known_ids[key] = str(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        made = str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        made = str(experiment.experiment_id)
    known_ids[key] = made
    return made
