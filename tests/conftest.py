"""Shared fixtures: a migrated MLflow SQLite store per test, the loopback Gemini server,
and environment switches. Tests run real parts: no client object is mocked."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agents_pipelines.testing import GeminiLoopbackServer
from agents_pipelines.tracking import drain_trace_export

if TYPE_CHECKING:
    import dagster as dg

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "workflows"
# The examples' Python (shop/) is importable where the code location runs, the repo root
# (workspace.yaml's working_directory); tests run in temporary directories instead.
sys.path.append(str(REPO))
FAKE_KEY = "fake-gemini-key-7f3a9c1e5b"  # recognizable, so leaks can be searched for
DAGSTER = Path(sys.executable).parent / "dagster"  # the project environment's CLI


def doc_pages() -> list[Path]:
    """The README, then the documentation site's pages in its navigation order: the order a
    reader meets them, and the order tests/test_readme.py runs their commands in."""
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]

    def pages(entries: Any) -> list[str]:
        found: list[str] = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [value]
        return found

    written = [REPO / "docs" / page for page in pages(nav)]
    return [REPO / "README.md", *(page for page in written if page.exists())]


def docs_text() -> str:
    """Every page a user reads, README first, as one text."""
    return "\n".join(page.read_text() for page in doc_pages())


def docs_section(title: str) -> str:
    """The text under the heading `title` (any level), up to the next heading, in whichever
    page holds it."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#|\Z)", docs_text(), re.S | re.M)
    assert match, f"no section titled {title!r} in README.md or docs/"
    return match.group(1)


# MLflow must not try to download its model catalog during tests (there is no network).
os.environ["MLFLOW_MODEL_CATALOG_URI"] = ""
for name in (
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "AGENTS_PIPELINES_LLM_BACKEND",
    "AGENTS_PIPELINES_CASSETTE",
    "GOOGLE_GEMINI_BASE_URL",
    "MLFLOW_TRACKING_URI",
):
    os.environ.pop(name, None)


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow SQLite store, migrated once; each test gets a copy (migration takes seconds)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    store = SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts"))
    store.engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def mlflow_uri(
    migrated_mlflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh tracking store in tmp_path, set through MLFLOW_TRACKING_URI."""
    db = tmp_path / "mlflow.db"
    shutil.copy(migrated_mlflow_db, db)
    uri = f"sqlite:///{db}"
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # the test's own MlflowClient() reads this store too
    monkeypatch.chdir(tmp_path)  # artifacts (./mlruns) land in the temp dir too
    yield uri
    drain_trace_export()
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "simulated")


@pytest.fixture
def gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[GeminiLoopbackServer]:
    """The real Gemini client, pointed at a loopback server that speaks the REST API."""
    with GeminiLoopbackServer() as server:
        monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "gemini")
        monkeypatch.setenv("GOOGLE_API_KEY", FAKE_KEY)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.base_url)
        yield server


# What a forkserver imports once for the processes it forks (tests/support/pool_claims.py,
# tests/test_first_runs.py): a pytest process has one forkserver, started with the list of
# the first test that uses it, so every user names this one list.
FORKSERVER_PRELOAD = [
    "dagster",
    "mlflow",
    "agents_pipelines.testing",
    "agents_pipelines.orchestration.stores.checkpoints",
    "agents_pipelines.orchestration.stores.spend_journal",
    "agents_pipelines.orchestration.pool_slots.sqlite",
    "agents_pipelines.orchestration.pool_slots.postgres",
]

POSTGRES_DSN = os.environ.get(
    "AGENTS_PIPELINES_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
REQUIRE_POSTGRES_ENV = "AGENTS_PIPELINES_REQUIRE_POSTGRES"  # .ci/run sets it: skips become failures


@pytest.fixture(scope="session")
def postgres_database(postgres_database_factory: Any) -> str:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    return str(postgres_database_factory())


@pytest.fixture(scope="session")
def postgres_database_factory() -> Iterator[Any]:
    """Makes fresh PostgreSQL databases, all dropped at the end of the session."""
    import uuid

    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(f"{POSTGRES_DSN}/test", connect_timeout=3)
    except psycopg2.OperationalError as exc:
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(
                f"PostgreSQL is required ({REQUIRE_POSTGRES_ENV} is set) but "
                f"unreachable at {POSTGRES_DSN}: {exc}"
            )
        pytest.skip(
            f"no PostgreSQL reachable at {POSTGRES_DSN} ({exc}); "
            f"set {REQUIRE_POSTGRES_ENV}=1 to make this a failure"
        )
    admin.autocommit = True
    names: list[str] = []

    def create(template: str | None = None) -> str:
        """A new database: empty, or a copy of the database ``template`` (its URL)."""
        name = f"agents_pipelines_test_{uuid.uuid4().hex[:10]}"
        copied = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"{copied}')
        names.append(name)
        return f"{POSTGRES_DSN}/{name}"

    try:
        yield create
    finally:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def mlflow_postgres_template(
    postgres_database_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A PostgreSQL database holding MLflow's schema, migrated once per session; a test
    copies it (``postgres_database_factory(template=...)``, 0.3 s), as the SQLite store is
    copied: an MLflow server that migrates a new database itself spends seconds on it
    (5 s in-process on an idle machine, most of a minute under load)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    url = str(postgres_database_factory())
    artifacts = tmp_path_factory.mktemp("mlflow-postgres-template")
    SqlAlchemyStore(url, str(artifacts)).engine.dispose()  # no connection left: it is copied
    return url


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


LINEAR = """\
schema_version: "1"
flow: {name: linear}
state:
  fields:
    topic: {type: str, required: true}
    summary: {type: str}
nodes:
  - id: summarize
    prompt: "Summarize {topic}."
    outputs: [summary]
edges:
  - {from: START, to: summarize}
  - {from: summarize, to: END}
orchestration:
  inputs: {topic: cats}
"""


def wait_until(predicate: Callable[[], Any], seconds: float, what: str, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after
    ``seconds`` naming ``what`` was awaited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def materialize_command(select: str) -> list[str]:
    """`dagster asset materialize` of the code location, for the assets in ``select``
    (comma-separated), as a user runs it."""
    module = "agents_pipelines.definitions"
    return [str(DAGSTER), "asset", "materialize", "-m", module, "--select", select]


def dagster_materialize(
    tmp_path: Path, workflows: Path, select: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run `dagster asset materialize` (``materialize_command``) of the code location
    serving ``workflows``, in a fresh DAGSTER_HOME under ``tmp_path``, with this process's
    environment plus ``env``; the finished process and the DAGSTER_HOME."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    full_env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AGENTS_PIPELINES_WORKFLOWS_DIR": str(workflows),
        **env,
    }
    done = subprocess.run(
        materialize_command(select),
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done, home


def metadata_values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Dagster metadata as plain values: ``{"llm_calls": 2}``, not ``IntMetadataValue(2)``."""
    return {key: value.value for key, value in metadata.items()}


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata values of ``asset``'s one materialization in ``result``."""
    (event,) = result.asset_materializations_for_node(asset)
    return metadata_values(event.metadata)


def workflow_yaml(
    name: str,
    *nodes: tuple[str, str, str],
    orchestration: str = "inputs: {topic: cats}",
    config: str = "",
) -> str:
    """A boilerplate workflow: a required ``topic`` input, then ``nodes`` called one after
    another from START to END, each an ``(id, prompt, output field)`` writing one str field.

    ``orchestration`` and ``config`` are the YAML under those keys, written unindented.
    Where the YAML itself is what a test is about, the test spells it out instead."""
    fields = [f"    {output}: {{type: str}}" for _, _, output in nodes]
    steps = [
        f'  - {{id: {id_}, prompt: "{prompt}", outputs: [{out}]}}' for id_, prompt, out in nodes
    ]
    ids = ["START", *(id_ for id_, _, _ in nodes), "END"]
    edges = [f"  - {{from: {a}, to: {b}}}" for a, b in pairwise(ids)]
    lines = [
        'schema_version: "1"',
        f"flow: {{name: {name}}}",
        "state:\n  fields:\n    topic: {type: str, required: true}",
        *fields,
        "nodes:",
        *steps,
        "edges:",
        *edges,
        *_block("orchestration", orchestration),
        *_block("config", config),
    ]
    return "\n".join(lines) + "\n"


def _block(key: str, body: str) -> list[str]:
    return [f"{key}:", *(f"  {line}" for line in body.splitlines())] if body else []


AGREED_FIGURES = (
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "total_cost_usd",
    "llm_calls",
    "eval_cost_usd",  # the evals' judges: a part of the totals above, shown apart
    "eval_tokens",
)


def assert_usage_agrees(meta: Mapping[str, Any], run_id: str) -> Any:
    """Tokens, cost and LLM calls are the same in the Dagster metadata ``meta``, the MLflow
    run's metrics, its cost_summary.json and its trace (whose LLM spans are counted and
    their costs summed; the judges' spans, named by their eval, apart). Returns the trace."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey

    from agents_pipelines.tracking.span_policy import EVAL

    client = MlflowClient()
    run = client.get_run(run_id)
    figures = {key: meta[key] for key in AGREED_FIGURES}
    assert {key: run.data.metrics[key] for key in AGREED_FIGURES} == figures
    summary = json.loads(
        Path(client.download_artifacts(run_id, "cost_summary.json")).read_text(encoding="utf-8")
    )
    assert {key: summary["totals"][key] for key in AGREED_FIGURES} == figures
    assert len(summary["calls"]) == len(meta["node_calls"].records)
    drain_trace_export()
    trace = mlflow.get_trace(run.data.tags["agents_pipelines.trace_id"])
    llm_spans = [span for span in trace.data.spans if span.span_type == "CHAT_MODEL"]
    assert len(llm_spans) == meta["llm_calls"]
    assert (trace.info.token_usage or {}).get("total_tokens", 0) == meta["total_tokens"]
    span_cost = sum(s.attributes["mlflow.llm.cost"]["total_cost"] for s in llm_spans)
    assert round(span_cost, 9) == meta["total_cost_usd"]
    judge_spans = [span for span in llm_spans if span.attributes.get(EVAL)]
    judge_cost = sum(s.attributes["mlflow.llm.cost"]["total_cost"] for s in judge_spans)
    assert round(judge_cost, 9) == meta["eval_cost_usd"]
    judge_tokens = sum(
        s.attributes[SpanAttributeKey.CHAT_USAGE]["total_tokens"] for s in judge_spans
    )
    assert judge_tokens == meta["eval_tokens"]
    if meta["total_cost_usd"]:
        cost = json.loads(trace.info.trace_metadata[TraceMetadataKey.COST])
        assert cost["total_cost"] == meta["total_cost_usd"]
    return trace


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests first (otherwise in file order): on `make pytest`'s workers the long
    ones then start early and the short ones fill in at the end, instead of one worker
    finishing a long test alone. And each `xdist_group` made to hold (see below)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    if getattr(config.option, "loadgroup", False):  # set on xdist's workers by --dist loadgroup
        _mark_xdist_groups(items)


def _mark_xdist_groups(items: list[pytest.Item]) -> None:
    """`--dist loadgroup` runs the tests of one `xdist_group` on one worker, one at a time,
    by a suffix ``@group`` on their node ids. pytest-xdist 3.8 writes it to ``item._nodeid``,
    which pytest 9.2 no longer reads (a node id is ``item._id`` now), so every "one
    many-process test at a time" test ran beside others of its group on the other worker.
    The suffix is written where pytest reads it."""
    from _pytest.nodeid import NodeId

    for item in items:
        groups = sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group")})
        suffix = f"@{'_'.join(groups)}"
        if groups and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)


@pytest.fixture
def fresh_registry() -> Iterator[Any]:
    """The process registry (what runs reuse between them) emptied, as a new process has
    it, before the test and again after it."""
    from agents_pipelines.registry import process_registry

    registry = process_registry()
    registry.reset()
    yield registry
    registry.reset()
