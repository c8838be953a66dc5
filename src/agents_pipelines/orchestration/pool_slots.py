"""Dagster's PostgreSQL event log storage, with a pool slot claim that two processes cannot
both win.

Dagster 1.13 claims a pool slot in two statements on an autocommit connection: a
``SELECT ... FOR UPDATE SKIP LOCKED`` of a free slot, whose row lock ends with that select,
then an ``UPDATE`` of that slot by id alone. Two runs claiming at the same moment can both
select the same free slot and both "claim" it, so a pool of 3 ran 4 Gemini calls at once in
2 of 8 trials of tests/test_celery.py. Here the claim is one statement that takes a free
slot only while it is still free. The team profile (deploy/team/dagster.yaml) names this
class as its event log storage; everything else is dagster-postgres's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as db
from dagster._core.storage.event_log.schema import ConcurrencySlotsTable
from dagster._serdes import ConfigurableClassData
from dagster._utils.concurrency import ConcurrencySlotStatus
from dagster_postgres import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

__all__ = ["PoolSafePostgresEventLogStorage"]


class PoolSafePostgresEventLogStorage(PostgresEventLogStorage):
    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PoolSafePostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str
    ) -> ConcurrencySlotStatus:
        slots = ConcurrencySlotsTable
        free = (
            db.select(slots.c.id)
            .where(
                slots.c.concurrency_key == concurrency_key,
                slots.c.step_key.is_(None),
                slots.c.deleted.is_(False),
            )
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        # One statement: the row lock holds until the update, and a slot another claim
        # took in between is no longer free, so its update changes no row.
        claim = (
            slots.update()
            .where(slots.c.id == free, slots.c.step_key.is_(None))
            .values(run_id=run_id, step_key=step_key)
        )
        with self.index_connection() as conn:
            claimed = conn.execute(claim).rowcount
        return ConcurrencySlotStatus.CLAIMED if claimed else ConcurrencySlotStatus.BLOCKED
