"""Experiment ids by (tracking URI, experiment name): one lookup per process, not per run."""

from __future__ import annotations

from typing import Any

_experiment_ids: dict[tuple[str, str], str] = {}


def is_cached(tracking_uri: str, name: str) -> bool:
    return (tracking_uri, name) in _experiment_ids


def forget(tracking_uri: str, name: str) -> None:
    """Look the experiment up again next time (it may have been deleted and made anew)."""
    _experiment_ids.pop((tracking_uri, name), None)


def experiment_id(client: Any, tracking_uri: str, name: str) -> str:
    """The id of experiment ``name``, made if missing. A deleted one is not cached."""
    from mlflow.exceptions import MlflowException

    key = (tracking_uri, name)
    if (known := _experiment_ids.get(key)) is not None:
        return known
    if (experiment := client.get_experiment_by_name(name)) is not None:
        if experiment.lifecycle_stage != "deleted":
            _experiment_ids[key] = str(experiment.experiment_id)
        return str(experiment.experiment_id)
    try:
        made = str(client.create_experiment(name))
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        made = str(experiment.experiment_id)
    _experiment_ids[key] = made
    return made
