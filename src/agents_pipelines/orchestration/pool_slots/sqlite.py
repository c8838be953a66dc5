"""Dagster's embedded SQLite event log storage with the one-statement pool slot claim (the
shipped dagster.yaml's).

It keeps its logs where Dagster's default storage does, ``history/runs`` under the
instance's home, so a home that ran without this class keeps its history. dagster.yaml
cannot name that folder (it cannot join a path to the home, and the home may be a
temporary one, as under ``dagster dev`` without DAGSTER_HOME), so the storage takes it from
the instance that registers it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agents_pipelines._compat.dagster import ConfigurableClassData, SqliteEventLogStorage
from agents_pipelines.orchestration.pool_slots import OneStatementSlotClaim

if TYPE_CHECKING:
    from dagster import DagsterInstance

__all__ = ["PoolSafeSqliteEventLogStorage"]


class PoolSafeSqliteEventLogStorage(OneStatementSlotClaim, SqliteEventLogStorage):
    def __init__(self, inst_data: ConfigurableClassData | None = None):
        # SqliteEventLogStorage's own set-up opens the index database in the home's folder:
        # it runs in register_instance, which DagsterInstance calls first thing.
        self._configured_inst_data = inst_data

    @classmethod
    def config_type(cls) -> Mapping[str, Any]:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PoolSafeSqliteEventLogStorage:
        return cls(inst_data)

    def register_instance(self, instance: DagsterInstance) -> None:
        folder = os.path.join(instance.root_directory, "history", "runs", "")
        SqliteEventLogStorage.__init__(self, folder, self._configured_inst_data)
        super().register_instance(instance)
