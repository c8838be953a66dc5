"""Dagster's embedded SQLite event log storage with the one-statement pool slot claim (the
shipped dagster.yaml's).

Configured by the instance's home, not by the event log folder: dagster.yaml cannot join a
path to ``$DAGSTER_HOME``, and the logs stay where Dagster's default storage puts them
(``history/runs`` under the home), so a home that ran without this class keeps its history.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dagster import DagsterInvariantViolationError, StringSource
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._serdes import ConfigurableClassData

from agents_pipelines.orchestration.pool_slots import OneStatementSlotClaim

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = ["PoolSafeSqliteEventLogStorage"]


class PoolSafeSqliteEventLogStorage(OneStatementSlotClaim, SqliteEventLogStorage):
    def __init__(self, dagster_home: str, inst_data: ConfigurableClassData | None = None):
        self._dagster_home = os.path.realpath(dagster_home)
        super().__init__(os.path.join(self._dagster_home, "history", "runs", ""), inst_data)

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PoolSafeSqliteEventLogStorage:
        return cls(config_value["dagster_home"], inst_data)

    def register_instance(self, instance: DagsterInstance) -> None:
        # An instance loaded from another folder (DagsterInstance.from_config(path) with
        # DAGSTER_HOME naming a different home) would read and write that home's events.
        home = os.path.realpath(instance.root_directory)
        if home != self._dagster_home:
            raise DagsterInvariantViolationError(
                f"event_log_storage.config.dagster_home is {self._dagster_home}, but this "
                f"Dagster instance was loaded from {home}: its events would go to another "
                "instance's storage. Set DAGSTER_HOME to the folder that holds this "
                "dagster.yaml."
            )
        super().register_instance(instance)
