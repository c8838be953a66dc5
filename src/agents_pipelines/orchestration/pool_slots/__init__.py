"""Dagster's event log storages with a pool slot claim that two processes cannot both win.

Dagster 1.13 claims a pool slot in two statements: a select of a free slot, then an update
of that slot by id alone. Nothing holds the slot between the two:

- on PostgreSQL the select is ``FOR UPDATE SKIP LOCKED`` on an autocommit connection, so
  its row lock ends with the select (a pool of 3 ran 4 Gemini calls at once in 2 of 8
  trials of tests/test_celery.py);
- on SQLite, ``FOR UPDATE`` is ignored and Python's sqlite3 opens the transaction only at
  the update, so the select reads in autocommit (two backfill runs held a pool of one slot
  at once under `dagster dev`, tests/test_dagster_dev_e2e.py).

Two runs claiming at the same moment both select the same free slot, and both "claim" it.
Here the claim is one statement that takes a free slot only while it is still free: a
PostgreSQL update keeps the selected row locked until it ends, and a SQLite update holds
the database's write lock from its start. The shipped dagster.yaml names the SQLite class,
the team profile (deploy/team/dagster.yaml) the PostgreSQL one; everything else is
Dagster's own, freeing included: a step's own release, and the run monitoring daemon's
``free_concurrency_slots_for_run`` for a run that ended without its step ending
(``free_slots_after_run_end_seconds`` in both profiles; tests/test_pool_slot_release.py
kills a run worker on each storage and sees its slot come back).
"""

from __future__ import annotations

import sqlalchemy as db

from agents_pipelines._compat.dagster import ConcurrencySlotsTable, SlotClaimHook

__all__ = ["OneStatementSlotClaim"]


class OneStatementSlotClaim(SlotClaimHook):
    """Mixed in before a Dagster SQL event log storage, it replaces the slot claim."""

    def claim_free_slot(self, concurrency_key: str, run_id: str, step_key: str) -> bool:
        slots = ConcurrencySlotsTable
        free = (
            db.select(slots.c.id)
            .where(
                slots.c.concurrency_key == concurrency_key,
                slots.c.step_key.is_(None),
                slots.c.deleted.is_(False),
            )
            .limit(1)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's compiler leaves it out
            .scalar_subquery()
        )
        # One statement: a slot another claim took in between is no longer free, so its
        # update changes no row.
        claim = (
            slots.update()
            .where(slots.c.id == free, slots.c.step_key.is_(None))
            .values(run_id=run_id, step_key=step_key)
        )
        with self.index_connection() as conn:
            return bool(conn.execute(claim).rowcount)
