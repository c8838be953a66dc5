"""The shipped dagster.yaml, as Dagster reads it: the pool bound, the run queue settings
that let a backfill's run workers start while other runs hold the pool's slots (README
"Performance", benchmarks/daemon_backfill.py), and the event log storage whose pool slot
claim two processes cannot both win."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator

from conftest import REPO
from pool_claims import assert_one_claim_per_slot


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A Dagster home holding the shipped dagster.yaml."""
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    return tmp_path


def test_shipped_dagster_yaml_bounds_pools_and_launches_runs_ahead_of_free_slots(
    home: Path,
) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
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


@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_a_pool_slot_goes_to_one_claim_among_many_at_once_on_sqlite(home: Path) -> None:
    # Dagster 1.13's SQLite claim (a select in autocommit, then an update by id) let two
    # backfill runs hold a pool of one slot at once under `dagster dev`
    # (tests/test_dagster_dev_e2e.py), and gave 3 slots to 9 to 12 of 12 claims at once
    # (the same trials with Dagster's SqliteEventLogStorage); now exactly 3, 5 times.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert type(storage).__name__ == "PoolSafeSqliteEventLogStorage"
        # Where Dagster's default storage keeps event logs: a home keeps its history.
        assert Path(storage._base_dir) == home / "history" / "runs"  # type: ignore[attr-defined]
    assert_one_claim_per_slot(str(home), slots=3, processes=12, trials=5)


def test_the_event_log_stays_in_the_instances_own_home_even_a_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `dagster dev` without DAGSTER_HOME reads the project's dagster.yaml and keeps its
    # storage in a temporary home: the storage follows the instance, not a variable.
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    project, temporary = tmp_path / "project", tmp_path / ".tmp_dagster_home_x"
    project.mkdir()
    shutil.copy(REPO / "dagster.yaml", project / "dagster.yaml")
    ref = InstanceRef.from_dir(str(temporary), config_dir=str(project))
    with dg.DagsterInstance.from_ref(ref) as instance:
        storage = instance.event_log_storage
        assert type(storage).__name__ == "PoolSafeSqliteEventLogStorage"
        storage.set_concurrency_slots("gemini", 2)
        assert storage.get_concurrency_info("gemini").slot_count == 2
    assert (temporary / "history" / "runs" / "index.db").is_file()
    assert not (project / "history").exists()
