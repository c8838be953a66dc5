"""dagster-postgres's event log storage with the one-statement pool slot claim (the team
profile's, deploy/team/dagster.yaml)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster_postgres import PostgresEventLogStorage

from agents_pipelines._compat.dagster import ConfigurableClassData, postgres_storage_arguments
from agents_pipelines.orchestration.pool_slots import OneStatementSlotClaim

__all__ = ["PoolSafePostgresEventLogStorage"]


class PoolSafePostgresEventLogStorage(OneStatementSlotClaim, PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PoolSafePostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            **postgres_storage_arguments(config_value),
        )
