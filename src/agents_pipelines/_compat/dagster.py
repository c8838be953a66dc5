"""Dagster's private APIs that agents_pipelines uses (dagster 1.13.27, dagster-postgres 0.29.27
checked)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster._config import validate_config
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._serdes import ConfigurableClassData
from dagster._utils.concurrency import ConcurrencySlotStatus

__all__ = [
    "ConcurrencySlotsTable",
    "ConfigurableClassData",
    "SlotClaimHook",
    "SqliteEventLogStorage",
    "celery_run_launcher_class",
    "config_problems",
    "launcher_instance",
    "mark_stop_pending",
    "postgres_storage_arguments",
    "worker_health",
]


def config_problems(config_schema: Any, value: Mapping[str, Any]) -> list[str]:
    """Why ``value`` does not fit ``config_schema`` (an executor's), one message each.

    Why: a Celery executor's YAML is checked as the code location loads, with Dagster's own
    verdict, instead of at the first run. Uses ``dagster._config.validate_config``.
    Public replacement: none for a lone config schema; ``dg.validate_run_config`` needs a job.
    """
    checked = validate_config(config_schema, value)
    return [] if checked.success else [error.message for error in checked.errors or ()]


def mark_stop_pending() -> bool:
    """Set Dagster's flag of a stop that arrived between steps; False if it is gone.

    Why: a stop turned into a Failure (to carry the spend) ends one step only; with the flag
    set, Dagster raises the stop again as the next step starts (or as the run's resources are
    torn down). Uses ``dagster._utils.interrupts._received_interrupt``, the dict that
    ``capture_interrupts``'s signal handler sets. Public replacement: none (a step cannot ask
    Dagster to stop the rest of its run).
    """
    from dagster._utils import interrupts

    received = getattr(interrupts, "_received_interrupt", None)
    if not isinstance(received, dict) or "received" not in received:
        return False
    received["received"] = True
    return True


class SlotClaimHook(SqlEventLogStorage):
    """Routes Dagster's pool slot claim to ``claim_free_slot``, which a subclass defines.

    Why: Dagster's SQL storages claim a slot in two statements that two processes can both
    win (orchestration/pool_slots). The claim is the private method
    ``SqlEventLogStorage._claim_concurrency_slot(concurrency_key, run_id, step_key)``,
    called by the public ``claim_concurrency_slot`` once the step is assigned. The storage
    classes and the slots table come from ``dagster._core.storage``. Public replacement: none
    (a custom event log storage is public, its slot claim is not).
    """

    def _claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str
    ) -> ConcurrencySlotStatus:
        claimed = self.claim_free_slot(concurrency_key, run_id, step_key)
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED

    def claim_free_slot(self, concurrency_key: str, run_id: str, step_key: str) -> bool:
        """Take a free slot of ``concurrency_key`` for the step; whether one was taken."""
        raise NotImplementedError


def postgres_storage_arguments(config_value: Mapping[str, Any]) -> dict[str, Any]:
    """The URL and token provider arguments of a dagster-postgres storage, from its config.

    Why: a subclass of ``PostgresEventLogStorage`` builds itself from dagster.yaml's config
    as the parent does. Uses ``dagster_postgres.utils`` (undocumented). Public replacement:
    none; ``PostgresEventLogStorage.from_config_value`` returns the parent class.
    """
    from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

    return {
        "postgres_url": pg_url_from_config(config_value),
        "token_provider": get_token_provider_from_config(config_value),
    }


def serialized_repository_snapshot(repository: Any) -> str:
    """The snapshot of a repository that a code server sends the webserver, serialized.

    Why: the code-location benchmark (benchmarks/_load_child.py) times what the UI asks of a
    code location after its load. ``RepositorySnap`` lives in Dagster's private
    ``_core.remote_representation`` (dagster 1.13.27 checked). Public replacement: none; the
    code server's gRPC API returns the same snapshot to a client.
    """
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    return str(serialize_value(RepositorySnap.from_def(repository)))


def celery_run_launcher_class() -> type[Any]:
    """dagster-celery's run launcher class, ``dagster_celery.launcher.CeleryRunLauncher``.

    Why: orchestration/celery_launcher.py subclasses it (a Terminate ends CANCELED, a lost
    worker's run fails). The module is not in dagster-celery's API reference and the class is
    not exported from ``dagster_celery`` (dagster-celery 0.29.27 checked); imported here, on
    demand, since dagster-celery is the ``celery`` extra. Public replacement: none.
    """
    from dagster_celery.launcher import CeleryRunLauncher

    return CeleryRunLauncher


def launcher_instance(launcher: Any) -> Any:
    """The DagsterInstance a run launcher belongs to.

    Why: a run launcher's ``terminate(run_id)`` and ``check_run_worker_health(run)`` need the
    instance to read and mark the run; Dagster hands it over through ``register_instance``
    and keeps it behind the private ``RunLauncher._instance`` (dagster 1.13.27 checked; every
    launcher Dagster ships reads it so). Public replacement: none.
    """
    return launcher._instance


def worker_health(status: str, message: str | None = None) -> Any:
    """A ``CheckRunHealthResult`` of ``WorkerStatus[status]`` (RUNNING, SUCCESS, FAILED,
    UNKNOWN, NOT_FOUND) and ``message``: what run monitoring expects of a launcher.

    Why: both classes live in the private ``dagster._core.launcher`` (dagster 1.13.27
    checked). Public replacement: none; custom run launchers are documented, these are not.
    """
    from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

    return CheckRunHealthResult(WorkerStatus[status], message)
