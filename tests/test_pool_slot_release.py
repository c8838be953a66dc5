"""A run that ends without its steps ending gives its pool slots back: `dagster dev` with each
shipped profile (SQLite, and the team's PostgreSQL one) on a fresh home, a run's worker
killed with SIGKILL mid-step, and the daemon's run monitoring freeing the slot it held.

Without `free_slots_after_run_end_seconds` the killed run's slot stayed claimed for good
(still claimed 7 minutes later under `dagster dev`; four kills blocked a pool of four)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from conftest import EXAMPLES, REPO, wait_until
from test_dagster_dev_e2e import final_status, launch_run, running_dagster_dev

PROFILES = {"sqlite": REPO / "dagster.yaml", "postgres": REPO / "deploy" / "team" / "dagster.yaml"}
# The run monitoring settings a test shortens to a second, so that it sees the daemon free a
# slot without waiting for the shipped intervals; a setting the profile lacks stays absent.
SHORTENED = ("poll_interval_seconds", "free_slots_after_run_end_seconds", "cancel_timeout_seconds")


def with_short_intervals(profile: Path) -> str:
    """The profile as shipped, but for run monitoring's intervals, a second each."""
    config = yaml.safe_load(profile.read_text())
    monitoring = config["run_monitoring"]
    for key in SHORTENED:
        if key in monitoring:
            monitoring[key] = 1
    return yaml.safe_dump(config)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_shipped_profile_frees_the_slots_of_a_run_that_ended(profile: str) -> None:
    monitoring = yaml.safe_load(PROFILES[profile].read_text())["run_monitoring"]
    assert monitoring["enabled"]
    # Freed within a poll of the grace's end: half a minute at most, as the README says.
    after_end_s = monitoring["free_slots_after_run_end_seconds"]
    assert after_end_s > 0 and after_end_s + monitoring["poll_interval_seconds"] <= 30


@pytest.fixture
def storage_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The profile's name; for PostgreSQL, a database of this test's own in the environment
    of this process and of `dagster dev`."""
    profile: str = request.param
    if profile == "postgres":
        factory = request.getfixturevalue("postgres_database_factory")
        url = factory().replace("postgresql://", "postgresql+psycopg2://")
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
    yield profile


@pytest.mark.slow
@pytest.mark.parametrize(
    "storage_env",
    ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_killed_run_gives_its_pool_slot_back(
    storage_env: str, tmp_path: Path, migrated_mlflow_db: Path
) -> None:
    workflows = {"release_notes.yaml": (EXAMPLES / "release_notes.yaml").read_text()}
    # Each simulated call takes a minute: the step holds its slot when it is killed.
    env = {
        "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
        "AGENTS_PIPELINES_SIMULATED_LATENCY_S": "60",
    }
    dagster_yaml = with_short_intervals(PROFILES[storage_env])
    with running_dagster_dev(tmp_path, migrated_mlflow_db, workflows, env, dagster_yaml) as (
        url,
        home,
    ):
        run_id = launch_run(url, "release_notes")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            wait_until(lambda: claimed_by(instance) == [run_id], 120, "the run to claim its slot")
            pid = wait_until(lambda: step_pid(instance, run_id), 60, "the step to start")
            assert pid == run_worker_pid(instance, run_id)  # the in-process executor's step
            os.kill(pid, signal.SIGKILL)
            assert final_status(url, run_id) == "FAILURE"
            wait_until(lambda: pool_is_free(instance), 60, "the killed run's slot to be freed")


def claimed_by(instance: dg.DagsterInstance) -> list[str]:
    """The runs holding a slot of the `gemini` pool."""
    info = instance.event_log_storage.get_concurrency_info("gemini")
    return [slot.run_id for slot in info.claimed_slots]


def pool_is_free(instance: dg.DagsterInstance) -> bool:
    info = instance.event_log_storage.get_concurrency_info("gemini")
    return not info.claimed_slots and not info.pending_steps


def step_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The process the run's step started in."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
        if record.dagster_event is not None and record.dagster_event.pid is not None:
            return int(record.dagster_event.pid)
    return None


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run worker's pid, as the code server that started it records it."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        message = record.dagster_event.message if record.dagster_event else None
        if message and message.startswith("Started process for run (pid: "):
            return int(message.split("pid: ")[1].rstrip(")."))
    raise AssertionError(f"no run worker recorded for run {run_id}")
