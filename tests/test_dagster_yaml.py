"""The shipped dagster.yaml, as Dagster reads it: the pool bound and the run queue settings
that let a backfill's run workers start while other runs hold the pool's slots (README
"Performance", benchmarks/daemon_backfill.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator

from conftest import REPO


def test_shipped_dagster_yaml_bounds_pools_and_launches_runs_ahead_of_free_slots(
    tmp_path: Path,
) -> None:
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 4
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        # Four runs beyond the free slots may be launched, their workers starting meanwhile.
        assert concurrency.run_queue_config.should_block_op_concurrency_limited_runs
        assert concurrency.run_queue_config.op_concurrency_slot_buffer == 4
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_use_threads and coordinator.dequeue_num_workers == 4
        assert coordinator.dequeue_interval_seconds == 1
