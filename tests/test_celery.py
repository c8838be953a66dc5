"""Past one machine: deploy/celery/ on this machine's Redis and PostgreSQL.

Two Celery workers (deploy/celery/worker.sh, distinct names) run the steps of 16 runs
launched at once, each run in its own process with the Celery executor the environment
selects. Dagster's storage is PostgreSQL (deploy/team/dagster.yaml) and MLflow a tracking
server on PostgreSQL. The real Gemini client calls the loopback server, which counts the
calls in flight: the `gemini` pool must hold across workers, as must the spend limit of one
workflow and the budget of another, and every figure must agree."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
import yaml

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.orchestration import build_definitions
from agents_pipelines.testing import GeminiLoopbackServer
from agents_pipelines.testing.gemini_server.replies import RecordedRequest, Reply, default_reply
from conftest import (
    AGREED_FIGURES,
    EXAMPLES,
    REPO,
    REQUIRE_POSTGRES_ENV,
    assert_usage_agrees,
    metadata_values,
    wait_until,
    workflow_yaml,
)
from test_spend_limits import CALL_USD
from test_team_deployment import mlflow_on_postgres  # noqa: F401  (a fixture)

SHIPPED_CONFIG = REPO / "deploy" / "celery" / "celery.yaml"
REDIS_URL = os.environ.get("AGENTS_PIPELINES_TEST_REDIS", "redis://127.0.0.1:6379")
RABBITMQ_HOST = "127.0.0.1:5672"  # the machine's RabbitMQ, its default guest user
RABBITMQ_USER = "guest"
POOL_LIMIT = 3
WORKERS = ("celery_a", "celery_b")
WORKER_PROCESSES = 2  # per worker: 4 steps could run at once, one more than the pool allows
LATENCY_S = 1.0  # per Gemini call: long enough for steps on both workers to overlap
DAY_LIMIT_USD = 0.0025  # daily's spend limit: about five runs of two calls
BUDGET_USD = 0.0003  # capped's budget: between one call and two of its three
RUNS = ["daily", "daily", "daily", "capped"] * 4
ARRIVALS: list[tuple[float, str]] = []  # when each Gemini call reached the server
DAILY = workflow_yaml(
    "daily",
    ("draft", "Draft a note on {topic}.", "draft"),
    ("polish", "Polish the note on {topic}.", "note"),
    orchestration="inputs: {topic: cats}\n"
    f"spend_limits: [{{per: day, max_cost_usd: {DAY_LIMIT_USD}}}]",
)
CAPPED = workflow_yaml(
    "capped",
    *[(f"step_{i}", f"Step {i} on {{topic}}.", f"out_{i}") for i in range(3)],
    orchestration=f"inputs: {{topic: dogs}}\nbudget: {{max_cost_usd: {BUDGET_USD}}}",
)


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis, required like PostgreSQL when REQUIRE_POSTGRES_ENV is set."""
    import redis

    url = f"{REDIS_URL}/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(
                f"Redis is required ({REQUIRE_POSTGRES_ENV} is set) but unreachable at {url}: {exc}"
            )
        pytest.skip(f"no Redis reachable at {url} ({exc}); set {REQUIRE_POSTGRES_ENV}=1 to fail")
    return url


@pytest.fixture(scope="session")
def vhost_deletions() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The `rabbitmqctl delete_vhost` of each test, left to finish while the next test runs
    (each rabbitmqctl call starts an Erlang VM: 1.5 to 3.5 s); awaited at the session's end."""
    deletions: list[subprocess.Popen[bytes]] = []
    yield deletions
    for deletion in deletions:
        _, err = deletion.communicate(timeout=60)
        assert deletion.returncode == 0, f"{deletion.args}: {err.decode()}"


@pytest.fixture
def rabbitmq_url(vhost_deletions: list[subprocess.Popen[bytes]]) -> Iterator[str]:
    """A vhost of this test's own on the machine's RabbitMQ (others share the server),
    deleted afterwards; required like PostgreSQL when REQUIRE_POSTGRES_ENV is set."""
    vhost = f"agents_pipelines_test_{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", vhost)
    except (OSError, subprocess.SubprocessError) as exc:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"RabbitMQ is required ({REQUIRE_POSTGRES_ENV} is set): {exc}")
        pytest.skip(f"no RabbitMQ vhost ({exc}); set {REQUIRE_POSTGRES_ENV}=1 to fail")
    try:
        rabbitmqctl("set_permissions", "-p", vhost, RABBITMQ_USER, ".*", ".*", ".*")
        yield f"amqp://{RABBITMQ_USER}:{RABBITMQ_USER}@{RABBITMQ_HOST}/{vhost}"
    finally:
        delete = ["rabbitmqctl", "delete_vhost", vhost]
        vhost_deletions.append(
            subprocess.Popen(delete, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        )


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=True)


@pytest.fixture
def broker_url(redis_url: str) -> str:
    """Where the steps are queued: Redis here (a module may override it, as
    test_celery_worker_loss does with RabbitMQ)."""
    return redis_url


@pytest.fixture
def celery_config(tmp_path: Path, redis_url: str) -> Iterator[Path]:
    """deploy/celery/celery.yaml, with keys of this test's own in the shared Redis, deleted
    afterwards."""
    yield from isolated_celery_config(tmp_path, redis_url)


def isolated_celery_config(
    tmp_path: Path, redis_url: str, transport: Mapping[str, Any] | None = None
) -> Iterator[Path]:
    """deploy/celery/celery.yaml with its Redis keys under a prefix of this test's own (and
    ``transport`` over its broker transport options), written to a file; the keys are
    deleted afterwards."""
    import redis

    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    prefix = f"agents_pipelines_test_{uuid.uuid4().hex[:8]}:"
    source = config["execution"]["config"].setdefault("config_source", {})
    transport_options = source.setdefault("broker_transport_options", {})
    transport_options.update(global_keyprefix=prefix, **(transport or {}))
    source["result_backend_transport_options"] = {"global_keyprefix": prefix}
    path = tmp_path / "celery.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)


@pytest.fixture
def tracking_uri(mlflow_on_postgres: str) -> str:  # noqa: F811
    """Where the deployment's runs are tracked: an MLflow server on PostgreSQL."""
    return mlflow_on_postgres


@pytest.fixture
def deployment(
    tmp_path: Path,
    redis_url: str,
    broker_url: str,
    celery_config: Path,
    postgres_database_factory: Any,
    tracking_uri: str,
    gemini: GeminiLoopbackServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """The environment every process of the deployment shares, its instance migrated."""
    dagster_db = postgres_database_factory().replace("postgresql://", "postgresql+psycopg2://")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", dagster_db)  # for this test's own reads
    home, workflows = tmp_path / "dagster_home", tmp_path / "workflows"
    home.mkdir()
    workflows.mkdir()
    shutil.copy(REPO / "deploy" / "team" / "dagster.yaml", home / "dagster.yaml")
    (workflows / "daily.yaml").write_text(DAILY)
    (workflows / "capped.yaml").write_text(CAPPED)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": dagster_db,
        "AGENTS_PIPELINES_EXECUTOR": "celery",
        "AGENTS_PIPELINES_CELERY_CONFIG": str(celery_config),
        "AGENTS_PIPELINES_CELERY_BROKER": broker_url,
        "AGENTS_PIPELINES_CELERY_BACKEND": redis_url,
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }

    def slow(request: RecordedRequest) -> Reply:
        ARRIVALS.append((time.time(), request.prompt_text[:12]))  # to explain a failure
        return replace(default_reply(request), delay_s=LATENCY_S)

    ARRIVALS.clear()
    gemini.set_default(slow)
    with dg.DagsterInstance.from_config(str(home)) as instance:  # migrates the schema
        instance.event_log_storage.set_concurrency_slots("gemini", POOL_LIMIT)
    yield env


def start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                str(REPO / "deploy" / "celery" / "worker.sh"),
                name,
                "--concurrency",
                str(WORKER_PROCESSES),
            ],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: worker.sh, celery and its pool
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    os.killpg(worker.pid, signal.SIGTERM)  # Celery's warm shutdown; no task is running
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)


@pytest.fixture
def workers(deployment: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Path]]:
    logs = {name: tmp_path / f"{name}.log" for name in WORKERS}
    started = [start_worker(name, deployment, log) for name, log in logs.items()]
    try:
        for name, log in logs.items():
            wait_until(lambda log=log: b" ready." in log.read_bytes(), 120, f"worker {name}")
        yield logs
    finally:
        for worker in started:
            stop_worker(worker)


def step_events(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    """Where the run's step ran (the worker dagster-celery names, the process Dagster
    records) and how it ended: its metadata, or its failure's message and metadata."""
    found: dict[str, Any] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        data = event.event_specific_data
        if event.event_type_value == "ENGINE_EVENT" and "Celery worker" in data.metadata:
            found["worker"] = data.metadata["Celery worker"].value
        elif event.event_type_value == "STEP_START":
            found.setdefault("starts", []).append(entry.timestamp)
            found["pid"] = event.pid
        elif event.event_type_value == "STEP_SUCCESS":
            found["end"] = entry.timestamp
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            found["metadata"] = metadata_values(data.materialization.metadata)
        elif event.event_type_value == "STEP_FAILURE":
            found["end"], found["error"] = entry.timestamp, data.error.message
            found["metadata"] = metadata_values(data.user_failure_data.metadata)
    return found


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.xdist_group("concurrency")  # one many-process test at a time
def test_sixteen_runs_on_two_celery_workers(
    tmp_path: Path,
    deployment: dict[str, str],
    workers: dict[str, Path],
    gemini: GeminiLoopbackServer,
    mlflow_on_postgres: str,  # noqa: F811
) -> None:
    started = time.monotonic()
    driver = subprocess.run(
        [sys.executable, str(REPO / "tests" / "support" / "celery_driver.py"), *RUNS],
        env=deployment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    wall_s = time.monotonic() - started
    assert driver.returncode == 0, driver.stderr[-3000:]
    launched = [json.loads(line) for line in driver.stdout.splitlines() if line.startswith("{")]
    assert sorted(run["asset"] for run in launched) == sorted(RUNS)

    with dg.DagsterInstance.from_config(deployment["DAGSTER_HOME"]) as instance:
        steps = {run["run_id"]: step_events(instance, run["run_id"]) for run in launched}
        pool = instance.event_log_storage.get_concurrency_info("gemini")
    # Every step ran once, in a Celery worker; both workers took steps.
    assert all(len(step["starts"]) == 1 for step in steps.values())
    per_worker = Counter(step["worker"].split("@")[0] for step in steps.values())
    assert set(per_worker) == set(WORKERS)
    assert os.getpid() not in {step["pid"] for step in steps.values()}
    calls = sum(step["metadata"]["llm_calls"] for step in steps.values())
    assert calls == len(gemini.requests)  # every call the server saw is in a run's figures
    # The pool held across the workers: never more steps running, nor Gemini calls in flight
    # (a step has one at a time), than its slots; and every slot came back.
    # With Dagster 1.13's own claim this failed in 2 of 8 trials (4 steps with 3 slots): the
    # team profile's event log storage claims a slot in one statement (orchestration/pool_slots/).
    running = [(s["starts"][0], s["end"], s["worker"]) for s in steps.values()]
    timeline = f"steps {sorted(running)}, calls {ARRIVALS} of {LATENCY_S} s"
    assert most_at_once([(start, end) for start, end, _ in running]) <= POOL_LIMIT, timeline
    assert 2 <= gemini.max_in_flight <= POOL_LIMIT, timeline
    assert pool.limit == POOL_LIMIT and not pool.claimed_slots and not pool.pending_steps

    by_asset: dict[str, list[dict[str, Any]]] = {"daily": [], "capped": []}
    for run in launched:
        by_asset[run["asset"]].append({**steps[run["run_id"]], **run})
    assert_spend_limit_held(by_asset["daily"])
    assert_budget_held(by_asset["capped"])
    assert_every_run_tracked(mlflow_on_postgres, [*by_asset["daily"], *by_asset["capped"]])
    print(
        f"celery: {len(RUNS)} runs in {wall_s:.1f} s, {calls} calls, at most "
        f"{gemini.max_in_flight} in flight (pool {POOL_LIMIT}), steps per worker "
        f"{dict(sorted(per_worker.items()))}, {len({s['pid'] for s in steps.values()})} "
        "worker processes"
    )


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one time."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def assert_spend_limit_held(daily: list[dict[str, Any]]) -> None:
    """Runs stop before the call that would start past the limit; each run in flight may
    cross it by the one call it has in flight, and the pool allows POOL_LIMIT of them."""
    spent = sum(run["metadata"]["total_cost_usd"] for run in daily)
    assert DAY_LIMIT_USD <= spent <= DAY_LIMIT_USD + POOL_LIMIT * CALL_USD
    finished = [run for run in daily if run["success"]]
    stopped = [run for run in daily if not run["success"]]
    assert finished and all(run["metadata"]["llm_calls"] == 2 for run in finished)
    assert all(
        "the spend limit of workflow daily's day (UTC) is reached" in run["error"]
        for run in stopped
    )
    # The runs that started after the limit was reached never called the model.
    assert any(run["metadata"]["llm_calls"] == 0 for run in stopped)


def assert_budget_held(capped: list[dict[str, Any]]) -> None:
    """Each run stops before its third call: two calls reach the budget."""
    for run in capped:
        assert not run["success"] and "budget" in run["error"]
        assert run["metadata"]["llm_calls"] == 2
        assert run["metadata"]["total_cost_usd"] == round(2 * CALL_USD, 9) > BUDGET_USD


def assert_every_run_tracked(tracking_uri: str, runs: list[dict[str, Any]]) -> None:
    """Each Dagster run that called the model has one MLflow run, with the same figures; a
    finished one has its trace, and its figures agree with the trace's too. A run refused
    by its spend limit as it starts has none: it records its zero spend in Dagster only."""
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    tracked = Counter(
        r.data.tags.get("dagster.run_id") for r in client.search_runs(experiments, max_results=200)
    )
    for run in runs:
        if tracked[run["run_id"]] == 0 and run["metadata"]["llm_calls"] == 0:
            assert "spend limit" in run["error"]
            continue
        assert tracked[run["run_id"]] == 1, run
        (mlflow_run,) = client.search_runs(
            experiments, filter_string=f"tags.`dagster.run_id` = '{run['run_id']}'"
        )
        figures = {key: run["metadata"][key] for key in AGREED_FIGURES}
        assert {key: mlflow_run.data.metrics[key] for key in AGREED_FIGURES} == figures
        if run["success"]:
            assert mlflow_run.info.status == "FINISHED"
            assert_usage_agrees(run["metadata"], mlflow_run.info.run_id)
        else:
            assert mlflow_run.info.status == "FAILED"


def test_the_celery_executor_reads_the_workers_config_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_EXECUTOR", "celery")
    monkeypatch.setenv("AGENTS_PIPELINES_CELERY_CONFIG", str(SHIPPED_CONFIG))
    job = build_definitions(EXAMPLES).resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == "celery"
    # The shipped file names variables: the same file serves every machine.
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())["execution"]["config"]
    assert config["broker"] == {"env": "AGENTS_PIPELINES_CELERY_BROKER"}
    assert config["backend"] == {"env": "AGENTS_PIPELINES_CELERY_BACKEND"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "AGENTS_PIPELINES_EXECUTOR=celery needs AGENTS_PIPELINES_CELERY_CONFIG: the path"),
        ("missing.yaml", r"missing.yaml: cannot read the file \(No such file or directory\)"),
        ("execution: {}\n", r"no `execution: config:` mapping"),
        (
            "execution: {config: {broker: 5, brokr: x}}\n",
            r'not a valid Celery executor config: Received unexpected config entry "brokr".*'
            r'Value "5" of type .* is not valid for expected type "String"',
        ),
    ],
)
def test_a_bad_celery_setting_names_the_variable_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str | None, message: str
) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_EXECUTOR", "celery")
    if config is not None:
        path = tmp_path / ("missing.yaml" if config == "missing.yaml" else "celery.yaml")
        if config != "missing.yaml":
            path.write_text(config)
        monkeypatch.setenv("AGENTS_PIPELINES_CELERY_CONFIG", str(path))
    with pytest.raises(AgentsPipelinesError, match=message):
        build_definitions(EXAMPLES)
