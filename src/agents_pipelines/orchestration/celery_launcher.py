"""A run launcher that runs each run inside a long-lived Celery worker (deploy/celery/):
dagster-celery's ``CeleryRunLauncher``, with two fixes that the team profile's guarantees need.

- Terminate: the run is marked CANCELING before its task is revoked, so it ends CANCELED (the
  stock launcher only revokes: run monitoring then saw a REVOKED task and failed the run).
- A lost worker: with ``task_acks_late`` and ``task_reject_on_worker_lost``
  (deploy/celery/celery.yaml) the task of a run whose pool process died is delivered again;
  Dagster refuses to execute a run that is already STARTED, so the task ends SUCCESS, which
  the stock launcher reports as a healthy worker: the run stayed STARTED until
  ``max_runtime_seconds``. Here a task that has ended while its run is still STARTED is a
  failed worker, and run monitoring fails the run at its next poll. (A run that ends normally
  is marked finished by its worker before its task ends.)
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from agents_pipelines._compat.dagster import (
    celery_run_launcher_class,
    launcher_instance,
    worker_health,
)

CeleryRunLauncher: type[Any] = celery_run_launcher_class()


class AgentsCeleryRunLauncher(CeleryRunLauncher):
    """``run_launcher: {module: agents_pipelines.orchestration.celery_launcher, class:
    AgentsCeleryRunLauncher, config: ...}``; the config is CeleryRunLauncher's."""

    def terminate(self, run_id: str) -> bool:
        instance: dg.DagsterInstance = launcher_instance(self)
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        if run.status != dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceling(run)
        return bool(super().terminate(run_id))

    def check_run_worker_health(self, run: dg.DagsterRun) -> Any:
        health = super().check_run_worker_health(run)
        if health.status.value != "SUCCESS":
            return health
        instance: dg.DagsterInstance = launcher_instance(self)
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != dg.DagsterRunStatus.STARTED:
            return health
        return worker_health(
            "FAILED",
            "The run's Celery task has ended but the run is still STARTED: the pool process "
            "or worker running it was lost (killed, out of memory), and the task delivered "
            "again found the run already started.",
        )
