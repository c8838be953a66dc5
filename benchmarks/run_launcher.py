"""10. The team profile's run launcher: dagster-celery's CeleryRunLauncher against a process
per run (Dagster's DefaultRunLauncher).

Two deployments side by side, each a `dagster dev` on the team profile
(deploy/team/dagster.yaml: PostgreSQL storage, a database of its own, the shipped run
queue), the same workflow (3 calls of 1 s, simulated backend) and the same MLflow store:

- ``process per run``: the profile as shipped. The daemon launches each run through the
  code server, which starts a run worker process that imports Dagster, the code location,
  LangGraph and MLflow before its step.
- ``celery``: the profile with deploy/celery/dagster.yaml's ``run_launcher``
  (AgentsCeleryRunLauncher, dagster-celery's CeleryRunLauncher fixed; Redis broker and result
  backend, keys under a prefix of this benchmark's own). One Celery worker
  (deploy/celery/worker.sh, deploy/celery/celery.yaml, ``--concurrency RUNS``) runs each run
  in one of its long-lived pool processes, with the in-process executor: the imports and
  the code location's load are paid once per pool process, not once per run.

Each batch launches RUNS runs at once through the webserver's GraphQL ``launchRun``. Per
batch: wall time from the first launch to the last run's end, each run's launch to end,
and the CPU seconds of this deployment's own processes over that span (every process of
its `dagster dev` and of its Celery worker, from /proc, sampled every 0.2 s: the machine
is shared, so its busy time would count other jobs). The batches alternate between the
deployments (A B, A B, ...), after one untimed warm-up batch each (code server loaded,
Celery pool processes past their first run), whose figures are in the details.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.core import BIN, REPO, BenchResult, Context, median
from benchmarks.daemon_backfill import _graphql, _location_loaded, _stop_group, _wait
from benchmarks.workflows import linear, write_workflow

NAME = "run_launcher"
RUNS, CALLS, LATENCY_S = 8, 3, 1.0
VARIANTS = ("process per run", "celery")
POSTGRES_DSN = os.environ.get(
    "AGENTS_PIPELINES_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
REDIS_URL = os.environ.get("AGENTS_PIPELINES_TEST_REDIS", "redis://127.0.0.1:6379")
ASSET = "launched_chain"
REPOSITORIES = (
    "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
)
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


@dataclass
class Batch:
    wall_s: float  # first launch to the last run's end
    launch_to_end_s: list[float]  # per run
    start_s: list[float]  # per run: launch to the run's start (its worker took it)
    cpu_s: float  # this deployment's processes over the batch
    failed: int


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    rounds = ctx.reps(3, 1)
    batches: dict[str, list[Batch]] = {name: [] for name in VARIANTS}
    warm: dict[str, Batch] = {}
    with ExitStack() as stack:
        deployments = {
            name: stack.enter_context(_deployment(ctx, work / name.replace(" ", "_"), name))
            for name in VARIANTS
        }
        for name, deployment in deployments.items():
            deployment.ready()
            warm[name] = deployment.batch("warm-up")
        for i in range(rounds):
            for name, deployment in deployments.items():
                batches[name].append(deployment.batch(f"round-{i}"))
    _report(result, batches, warm)
    return result


def _report(result: BenchResult, batches: dict[str, list[Batch]], warm: dict[str, Batch]) -> None:
    def per_run_cpu(name: str) -> float:
        return median(b.cpu_s for b in batches[name]) / RUNS

    def launch_to_end(name: str) -> float:
        return median(t for b in batches[name] for t in b.launch_to_end_s)

    def wall(name: str) -> float:
        return median(b.wall_s for b in batches[name])

    celery, default = "celery", "process per run"
    for what, measure in (("CPU per run", per_run_cpu), ("launch to end per run", launch_to_end)):
        ratio = measure(celery) / measure(default)
        result.gate(f"{what}: celery / process per run", ratio, "x", "< 1.00x", ratio < 1.0)
    result.info("batch wall: celery / process per run", wall(celery) / wall(default), "x")
    for name in VARIANTS:
        result.info(f"{name}: CPU per run (its processes)", per_run_cpu(name), "s")
        result.info(f"{name}: launch to end per run (median)", launch_to_end(name), "s")
        starts = median(t for b in batches[name] for t in b.start_s)
        result.info(f"{name}: launch to run start per run (median)", starts, "s")
        result.info(f"{name}: batch wall, {RUNS} runs at once", wall(name), "s")
    ideal = CALLS * LATENCY_S
    result.note(
        f"{RUNS} runs launched at once per batch, {CALLS} calls x {LATENCY_S:.0f} s each "
        f"(ideal launch to end {ideal:.0f} s); team profile on PostgreSQL, one database each"
    )
    for name in VARIANTS:
        for label, batch in [("warm-up", warm[name])] + [
            (f"round {i}", b) for i, b in enumerate(batches[name], 1)
        ]:
            result.note(
                f"{name}, {label}: wall {batch.wall_s:.1f} s, launch to end median "
                f"{statistics.median(batch.launch_to_end_s):.1f} s (max "
                f"{max(batch.launch_to_end_s):.1f}), CPU {batch.cpu_s:.1f} s "
                f"({batch.cpu_s / RUNS:.2f} s per run), failed runs {batch.failed}"
            )
    result.note(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


class _Deployment:
    """One `dagster dev` (and for ``celery`` its Celery worker) on its own DAGSTER_HOME."""

    def __init__(self, url: str, home: Path, env: dict[str, str], sessions: list[int]):
        self.url, self.home, self.env, self.sessions = url, home, env, sessions
        self.selector: dict[str, Any] = {}

    def ready(self) -> None:
        _wait(lambda: _location_loaded(self.url), 300, "the code location to load")
        nodes = _graphql(self.url, REPOSITORIES, {})["repositoriesOrError"]["nodes"]
        self.selector = {
            "repositoryLocationName": nodes[0]["location"]["name"],
            "repositoryName": nodes[0]["name"],
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [ASSET]}],
        }

    def batch(self, label: str) -> Batch:
        tag = {"key": "bench/batch", "value": f"{label}-{uuid.uuid4().hex[:6]}"}
        params = {"selector": self.selector, "executionMetadata": {"tags": [tag]}}
        cpu = _SessionCpu(self.sessions)
        launched = time.time()
        for _ in range(RUNS):
            reply = _graphql(self.url, LAUNCH, {"params": params})["launchRun"]
            if reply["__typename"] != "LaunchRunSuccess":
                raise RuntimeError(f"run not launched: {reply}")
        records = self._wait_for_runs({tag["key"]: tag["value"]})
        cpu.stop()
        end = max(r.end_time for r in records)
        return Batch(
            wall_s=end - launched,
            launch_to_end_s=[r.end_time - r.create_timestamp.timestamp() for r in records],
            start_s=[(r.start_time or end) - r.create_timestamp.timestamp() for r in records],
            cpu_s=cpu.between(launched, end),
            failed=sum(not r.dagster_run.is_success for r in records),
        )

    def _wait_for_runs(self, tags: dict[str, str]) -> list[Any]:
        import dagster as dg

        os.environ["DAGSTER_POSTGRES_URL"] = self.env["DAGSTER_POSTGRES_URL"]
        with dg.DagsterInstance.from_config(str(self.home)) as instance:

            def finished() -> list[Any] | None:
                records = list(instance.get_run_records(filters=dg.RunsFilter(tags=tags)))
                done = [r for r in records if r.dagster_run.is_finished]
                return records if len(done) == RUNS else None

            records: list[Any] = _wait(finished, 600, "the batch's runs to finish")
        return records


@contextmanager
def _deployment(ctx: Context, work: Path, variant: str) -> Iterator[_Deployment]:
    work.mkdir(parents=True, exist_ok=True)
    folder = work / "workflows"
    write_workflow(folder, ASSET, linear(ASSET, CALLS))
    home = work / "dagster_home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    profile = yaml.safe_load((REPO / "deploy" / "team" / "dagster.yaml").read_text())
    prefix = f"agents_pipelines_bench_{uuid.uuid4().hex[:8]}:"
    transport = {"global_keyprefix": prefix}
    if variant == "celery":
        source = {
            "broker_transport_options": transport,
            "result_backend_transport_options": transport,
        }
        shipped = yaml.safe_load((REPO / "deploy" / "celery" / "dagster.yaml").read_text())
        profile["run_launcher"] = shipped["run_launcher"]
        profile["run_launcher"]["config"]["config_source"] = source
    (home / "dagster.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    with _postgres_database() as database:
        env = ctx.env(
            ctx.mlflow_store(work),
            DAGSTER_HOME=str(home),
            DAGSTER_POSTGRES_URL=database,
            AGENTS_PIPELINES_WORKFLOWS_DIR=str(folder),
            AGENTS_PIPELINES_SIMULATED_LATENCY_S=str(LATENCY_S),
            AGENTS_PIPELINES_CELERY_BROKER=f"{REDIS_URL}/0",
            AGENTS_PIPELINES_CELERY_BACKEND=f"{REDIS_URL}/1",
            AGENTS_PIPELINES_CELERY_CONFIG=str(_celery_config(work, transport)),
        )
        env.pop("AGENTS_PIPELINES_EXECUTOR", None)  # runs execute their step in-process
        _migrate(home, database)
        with ExitStack() as stack:
            sessions = []
            if variant == "celery":
                sessions.append(stack.enter_context(_celery_worker(env, work / "worker.log")))
            url, session = stack.enter_context(_dagster_dev(env, work / "dagster_dev.log"))
            sessions.append(session)
            try:
                yield _Deployment(url, home, env, sessions)
            finally:
                stack.close()
                _delete_keys(prefix)


def _celery_config(work: Path, transport: dict[str, str]) -> Path:
    """deploy/celery/runs.yaml with this benchmark's key prefix in the shared Redis."""
    config = yaml.safe_load((REPO / "deploy" / "celery" / "runs.yaml").read_text())
    source = config["execution"]["config"]["config_source"]
    source["broker_transport_options"].update(transport)
    source["result_backend_transport_options"] = dict(transport)
    path = work / "celery.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def _dagster_dev(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """`dagster dev` in a session of its own (its webserver, daemon, code server and run
    workers with it): its URL and session id."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    argv = [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml")]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        _stop_group(process)


@contextmanager
def _postgres_database() -> Iterator[str]:
    import psycopg2

    name = f"agents_pipelines_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(f"{POSTGRES_DSN}/test", connect_timeout=3)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"{POSTGRES_DSN}/{name}".replace("postgresql://", "postgresql+psycopg2://")
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _migrate(home: Path, database: str) -> None:
    import dagster as dg

    os.environ["DAGSTER_POSTGRES_URL"] = database
    with dg.DagsterInstance.from_config(str(home)):
        pass


@contextmanager
def _celery_worker(env: dict[str, str], log: Path) -> Iterator[int]:
    """deploy/celery/worker.sh with RUNS pool processes, in a session of its own."""
    argv = [str(REPO / "deploy" / "celery" / "worker.sh"), "bench_runs", "--concurrency"]
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [*argv, str(RUNS)], env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait(lambda: b" ready." in log.read_bytes(), 300, "the Celery worker")
        yield worker.pid
    finally:
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)  # Celery's warm shutdown
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


def _delete_keys(prefix: str) -> None:
    import redis

    for db in (0, 1):
        with redis.Redis.from_url(f"{REDIS_URL}/{db}") as client:
            for key in client.scan_iter(match=f"{prefix}*"):
                client.delete(key)


class _SessionCpu:
    """CPU seconds of the processes in the given sessions (/proc/PID/stat), sampled every
    0.2 s on a thread. A process that exits keeps its last sample: its total, to 0.2 s."""

    def __init__(self, sessions: list[int]) -> None:
        self._sessions = set(sessions)
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._samples: dict[int, list[tuple[float, float]]] = {}
        self._sample()  # before the caller's start: long-lived processes count from here
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        now = time.time()
        for name in os.listdir("/proc"):
            if name.isdigit() and (cpu := self._cpu(int(name))) is not None:
                self._samples.setdefault(int(name), []).append((now, cpu))

    def _cpu(self, pid: int) -> float | None:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        if int(fields[3]) not in self._sessions:
            return None
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def between(self, start: float, end: float) -> float:
        total = 0.0
        for samples in self._samples.values():
            before = [cpu for moment, cpu in samples if moment <= start]
            # A process that ended by ``end`` keeps its last sample; 0.2 s: one sampling step.
            until = [cpu for moment, cpu in samples if moment <= end + 0.2]
            if until:
                total += until[-1] - (before[-1] if before else 0.0)
        return total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
