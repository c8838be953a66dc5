"""Retention beside a Dagster instance, and the ``agents_pipelines_prune`` job.

- ``instance_removals``: a workflow's checkpoint threads and spend-journal rows past its
  ``retention_days`` (stores/), found by the asset key in each thread and row.
- ``build_prune_job``: the job the code location ships when a workflow sets
  ``retention_days``, run daily by ``agents_pipelines_prune_schedule``; it runs what
  ``agents-pipelines prune`` runs (prune_command.py) against the instance it runs on.

Dagster's own retention (dagster.yaml ``retention:``) purges schedule and sensor ticks
only; runs and their event logs stay until deleted (docs/dagster.md).
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from agents_pipelines.orchestration.stores import checkpoints, spend_journal
from agents_pipelines.orchestration.stores.databases import instance_store, is_postgres
from agents_pipelines.spec import Workflow

if TYPE_CHECKING:
    from agents_pipelines.prune_command import Removal, Retention

JOB_NAME = "agents_pipelines_prune"
SCHEDULE_CRON = "17 3 * * *"  # daily, off the hour that schedules crowd


def instance_removals(
    instance: dg.DagsterInstance, retention: "Retention", dry_run: bool
) -> "list[Removal]":
    """The workflow's checkpoint threads and spend-journal rows older than its cutoff,
    deleted unless ``dry_run``. A SQLite store that does not exist yet is not made."""
    from agents_pipelines.prune_command import Removal

    name, key, cutoff = retention.workflow.name, retention.asset_key, retention.cutoff_s
    threads: list[str] = []
    if _exists(instance, checkpoints.SQLITE_FILE):
        with checkpoints.open_saver(instance) as saver:
            threads = checkpoints.expired_threads(saver, cutoff, key)
            for thread in [] if dry_run else threads:
                saver.delete_thread(thread)
    rows: list[str] = []
    if _exists(instance, spend_journal.SQLITE_FILE):
        with spend_journal.open_journal(instance) as journal:
            rows = journal.expired(key, cutoff)
            if rows and not dry_run:
                journal.delete_expired(key, cutoff)
    return [
        Removal(name, "checkpoint threads", tuple(threads), len(threads)),
        Removal(name, "spend-journal rows", tuple(rows), len(rows)),
    ]


def _exists(instance: dg.DagsterInstance, sqlite_file: str) -> bool:
    store = instance_store(instance, sqlite_file)
    return is_postgres(store) or Path(store).is_file()


def instance_from_env() -> dg.DagsterInstance | None:
    """The instance DAGSTER_HOME names, as ``dagster`` commands find it; None without it."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    return dg.DagsterInstance.get()


def build_prune_job(
    workflows: Sequence[Workflow], asset_keys: dict[str, str]
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition] | None:
    """The prune job and its daily schedule, or None when no workflow sets
    ``retention_days``."""
    # No ``from __future__ import annotations`` here: Dagster reads the op's annotations.
    if not any(w.spec.config.observability.mlflow.retention_days for w in workflows):
        return None
    kept = list(workflows)

    @dg.op(name=JOB_NAME, description="Delete what each workflow keeps past retention_days.")
    def prune_op(context: dg.OpExecutionContext) -> int:
        from agents_pipelines.prune_command import prune_workflows, render

        removals = prune_workflows(
            kept, dry_run=False, instance=context.instance, asset_keys=asset_keys
        )
        context.log.info(render(removals, kept, dry_run=False))
        return sum(removal.count for removal in removals)

    @dg.job(
        name=JOB_NAME,
        description="Deletes the MLflow runs and traces, checkpoints, spend-journal rows and "
        "development-cache entries older than each workflow's retention_days "
        "(`agents-pipelines prune`).",
    )
    def prune_job() -> None:
        prune_op()

    schedule = dg.ScheduleDefinition(
        name=f"{JOB_NAME}_schedule",
        job=prune_job,
        cron_schedule=SCHEDULE_CRON,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    return prune_job, schedule
