"""Which Dagster executor runs a workflow asset's step: AGENTS_PIPELINES_EXECUTOR.

``in_process`` (default): a workflow asset is one step, and Dagster's multiprocess executor
would start a process for it that imports the code location again: seconds per run
(benchmarks/whole_process.py measures both executors). The step's LLM calls already run
concurrently inside it. ``multiprocess`` restores Dagster's default, for runs that select many
independent workflows at once. ``celery`` sends each step to a Celery worker, on this machine
or another (deploy/celery/), configured by the same YAML file the workers start with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.settings import CELERY_CONFIG_ENV, EXECUTOR_ENV, settings

_INSTALL = "pip install 'agents_pipelines[celery]' (or `make install` in this repository)"


def executor_from_settings() -> dg.ExecutorDefinition:
    environment = settings()
    if environment.executor == "multiprocess":
        return dg.multiprocess_executor
    if environment.executor == "celery":
        return celery_executor_from_file(environment.celery_config)
    return dg.in_process_executor


def celery_executor_from_file(path: str | None) -> dg.ExecutorDefinition:
    """dagster-celery's executor, configured by ``execution.config`` of the YAML file that
    `dagster-celery worker start -y FILE` reads: run workers and Celery workers then agree on
    the broker, the result backend and the Celery settings. ``{env: NAME}`` values are read
    where the run executes, as the workers read theirs, so a broker password stays out of
    the file and out of the run's records."""
    if not path:
        raise AgentsPipelinesError(
            f"{EXECUTOR_ENV}=celery needs {CELERY_CONFIG_ENV}: the path of the YAML file the "
            "Celery workers start with (`dagster-celery worker start -y FILE`), e.g. "
            "deploy/celery/celery.yaml."
        )
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise AgentsPipelinesError(
            f"{EXECUTOR_ENV}=celery needs dagster-celery, which is not installed: {_INSTALL}."
        ) from None
    # Dagster's storage modules, which the compat hooks import, load only for Celery.
    from agents_pipelines._compat.dagster import config_problems

    config = _execution_config(Path(path))
    if found := config_problems(celery_executor.config_schema.config_type, config):
        problems = "; ".join(found)
        raise AgentsPipelinesError(
            f"{CELERY_CONFIG_ENV}={path}: execution.config is not a valid Celery executor "
            f"config: {problems}. Fix it in the file; deploy/celery/celery.yaml is an example."
        )
    return celery_executor.configured(config, name="celery")


def _execution_config(path: Path) -> dict[str, Any]:
    where = f"{CELERY_CONFIG_ENV}={path}"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AgentsPipelinesError(
            f"{where}: cannot read the file ({exc.strerror}). Point {CELERY_CONFIG_ENV} at the "
            "YAML file the Celery workers start with, e.g. deploy/celery/celery.yaml."
        ) from None
    except yaml.YAMLError as exc:
        raise AgentsPipelinesError(f"{where}: not valid YAML: {exc}") from None
    config = (data or {}).get("execution", {}).get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise AgentsPipelinesError(
            f"{where}: no `execution: config:` mapping, the block dagster-celery reads "
            "(broker, backend, config_source). See deploy/celery/celery.yaml."
        )
    return config
