"""Many processes claiming pool slots at the same instant, for the event log storages in
src/agents_pipelines/orchestration/pool_slots/ (the shipped SQLite one, the team
profile's PostgreSQL one)."""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import dagster as dg

from conftest import FORKSERVER_PRELOAD

STEP = "release_notes"
_instance: dg.DagsterInstance | None = None  # one per worker process


def _claim_at_once(args: tuple[str, int, Any, dict[str, str]]) -> bool:
    """One process's claim of a `gemini` slot, once every process is ready."""
    home, index, barrier, environment = args
    global _instance
    if _instance is None:  # opened before the barrier, so the claims meet
        os.environ.clear()  # the forkserver's, as it was when an earlier test started it
        os.environ.update(environment)
        _instance = dg.DagsterInstance.from_config(home)
    barrier.wait(timeout=120)
    status = _instance.event_log_storage._claim_concurrency_slot(  # type: ignore[attr-defined]
        "gemini", f"run-{index}", STEP
    )
    return bool(status.name == "CLAIMED")


def assert_one_claim_per_slot(home: str, slots: int, processes: int, trials: int) -> None:
    """``processes`` claims of a pool of ``slots`` at one instant, ``trials`` times: each
    time exactly ``slots`` win, and the storage shows each slot claimed once."""
    with dg.DagsterInstance.from_config(home) as instance:
        instance.event_log_storage.set_concurrency_slots("gemini", slots)
    # Not a fork of the test process, which would copy its threads' held locks: forked from
    # a forkserver that imported Dagster and the storages once (twelve spawned interpreters
    # each imported them). Each worker takes this process's environment (DAGSTER_HOME,
    # DAGSTER_POSTGRES_URL) as it is now, with its arguments.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(FORKSERVER_PRELOAD)
    with context.Manager() as manager, context.Pool(processes) as pool:
        barrier = manager.Barrier(processes)
        for trial in range(trials):
            args = [(home, i, barrier, dict(os.environ)) for i in range(processes)]
            claimed = pool.map_async(_claim_at_once, args).get(timeout=240)
            assert sum(claimed) == slots, f"trial {trial}: {sum(claimed)} claims of {slots}"
            with dg.DagsterInstance.from_config(home) as instance:
                storage = instance.event_log_storage
                info = storage.get_concurrency_info("gemini")
                assert (info.slot_count, len(info.claimed_slots)) == (slots, slots)
                for index, won in enumerate(claimed):
                    if won:
                        storage.free_concurrency_slot_for_step(f"run-{index}", STEP)
