"""The hooks of agents_pipelines._compat against the installed upstream releases.

Each test drives one hook the way our code does and fails naming the hook (``HOOK broke``)
when an upstream release changed what it relies on: ``make test-latest`` runs these against
the newest releases pyproject.toml allows. The last tests keep private upstream names inside
the compat package.
"""

from __future__ import annotations

import inspect
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import private_upstream_names


@contextmanager
def hook(name: str) -> Iterator[None]:
    """Turn any failure inside into one that names the compat hook upstream broke."""
    try:
        yield
    except Exception as exc:  # an AssertionError, or the upstream call itself failing
        pytest.fail(
            f"agents_pipelines._compat.{name} broke against the installed upstream: "
            f"{type(exc).__name__}: {exc}. Read the hook's docstring for what it relies on, "
            "then fix the hook (or move to the public API it names).",
            pytrace=False,
        )


@pytest.mark.parametrize("library", ["dagster", "mlflow", "langgraph", "genai"])
def test_each_compat_module_imports(library: str) -> None:
    """A name a compat module imports at its top (Dagster's storage classes, httpx2) is gone:
    this names the module; the hook tests below then fail on the same import."""
    import importlib

    with hook(library):
        module = importlib.import_module(f"agents_pipelines._compat.{library}")
        for name in module.__all__:
            assert getattr(module, name) is not None, name


# --- Dagster ------------------------------------------------------------------------------


def test_config_problems_names_what_is_wrong_in_a_celery_executor_config() -> None:
    from dagster_celery import celery_executor

    from agents_pipelines._compat.dagster import config_problems

    schema = celery_executor.config_schema.config_type
    with hook("dagster.config_problems"):
        assert config_problems(schema, {"broker": {"env": "CELERY_BROKER"}}) == []
        problems = config_problems(schema, {"broker": 3, "no_such_field": True})
        assert len(problems) == 2, problems
        assert any("no_such_field" in p for p in problems), problems
        assert any("broker" in p for p in problems), problems


def test_mark_stop_pending_sets_the_flag_dagster_raises_at_the_next_step() -> None:
    from dagster._utils.interrupts import capture_interrupts, pop_captured_interrupt

    from agents_pipelines._compat.dagster import mark_stop_pending

    with hook("dagster.mark_stop_pending"), capture_interrupts():
        assert pop_captured_interrupt() is False
        assert mark_stop_pending() is True
        assert pop_captured_interrupt() is True


def test_slot_claim_hook_receives_dagsters_claim(tmp_path: Path) -> None:
    from dagster._utils.concurrency import ConcurrencySlotStatus

    from agents_pipelines._compat.dagster import SlotClaimHook, SqliteEventLogStorage

    claims: list[tuple[str, str, str]] = []

    class Probe(SlotClaimHook, SqliteEventLogStorage):
        answer = True

        def claim_free_slot(self, concurrency_key: str, run_id: str, step_key: str) -> bool:
            claims.append((concurrency_key, run_id, step_key))
            return self.answer

    storage = Probe(str(tmp_path))
    with hook("dagster.SlotClaimHook"):
        storage.set_concurrency_slots("pool", 2)
        first = storage.claim_concurrency_slot("pool", "run-1", "step")
        Probe.answer = False
        second = storage.claim_concurrency_slot("pool", "run-2", "step")
        assert claims == [("pool", "run-1", "step"), ("pool", "run-2", "step")]
        assert first.slot_status == ConcurrencySlotStatus.CLAIMED
        assert second.slot_status == ConcurrencySlotStatus.BLOCKED
    storage.dispose()


def test_slot_claim_uses_columns_of_dagsters_slots_table() -> None:
    from agents_pipelines._compat.dagster import ConcurrencySlotsTable

    with hook("dagster.ConcurrencySlotsTable"):
        columns = set(ConcurrencySlotsTable.c.keys())
        assert {"id", "concurrency_key", "run_id", "step_key", "deleted"} <= columns, columns


def test_postgres_storage_arguments_fit_dagster_postgres() -> None:
    from dagster_postgres import PostgresEventLogStorage

    from agents_pipelines._compat.dagster import postgres_storage_arguments

    url = "postgresql://user:secret@db.example:5432/dagster"
    with hook("dagster.postgres_storage_arguments"):
        arguments = postgres_storage_arguments({"postgres_url": url})
        assert arguments["postgres_url"] == url
        assert arguments["token_provider"] is None
        accepted = inspect.signature(PostgresEventLogStorage.__init__).parameters
        assert {*arguments, "should_autocreate_tables", "inst_data"} <= set(accepted)


def test_serialized_repository_snapshot_names_each_asset() -> None:
    from agents_pipelines._compat.dagster import serialized_repository_snapshot

    @dg.asset
    def snapshot_probe() -> None: ...

    repository = dg.Definitions(assets=[snapshot_probe]).get_repository_def()
    with hook("dagster.serialized_repository_snapshot"):
        snapshot = serialized_repository_snapshot(repository)
        assert '"__class__": "ExternalRepositoryData"' in snapshot  # its serialized name
        assert "snapshot_probe" in snapshot


def test_celery_run_launcher_class_is_dagster_celerys_launcher() -> None:
    from agents_pipelines._compat.dagster import celery_run_launcher_class

    with hook("dagster.celery_run_launcher_class"):
        launcher = celery_run_launcher_class()
        assert launcher.__name__ == "CeleryRunLauncher"
        assert {"broker", "backend", "config_source"} <= set(launcher.config_type())
        for method in ("launch_run", "terminate", "check_run_worker_health"):
            assert callable(getattr(launcher, method)), method
        assert launcher(default_queue="dagster").supports_check_run_worker_health


def test_launcher_instance_is_the_instance_the_launcher_serves(tmp_path: Path) -> None:
    from agents_pipelines._compat.dagster import launcher_instance

    with hook("dagster.launcher_instance"), dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        assert launcher_instance(inst.run_launcher) is inst


def test_worker_health_is_what_run_monitoring_compares() -> None:
    from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

    from agents_pipelines._compat.dagster import worker_health

    with hook("dagster.worker_health"):
        health = worker_health("FAILED", "lost")
        assert isinstance(health, CheckRunHealthResult)
        assert health.status == WorkerStatus.FAILED and health.msg == "lost"
        assert worker_health("RUNNING").status == WorkerStatus.RUNNING


# --- MLflow -------------------------------------------------------------------------------


def test_langchain_tracer_makes_each_langchain_run_a_span_of_the_active_trace(
    mlflow_uri: str,
) -> None:
    """The tracer in a runnable's config callbacks traces it and its child runs (LangChain
    hands the handler down), below the span active at the call, as autolog's would."""
    import mlflow
    from langchain_core.runnables import RunnableLambda

    from agents_pipelines._compat.mlflow import import_langchain_tracer, langchain_tracer
    from agents_pipelines.tracking.export import drain_trace_export

    with hook("mlflow.import_langchain_tracer"):
        import_langchain_tracer()
    inner = RunnableLambda(lambda x: x + 1, name="inner")
    outer = RunnableLambda(lambda x: inner.invoke(x) * 2, name="outer")
    with mlflow.start_span("root") as root:
        tracer = langchain_tracer()
        assert outer.invoke(1, {"callbacks": [tracer]}) == 4
    drain_trace_export()
    stored = mlflow.get_trace(root.trace_id)
    with hook("mlflow.langchain_tracer"):
        assert tracer.run_inline is True
        assert stored is not None
        spans = stored.data.spans
        names = {span.span_id: span.name for span in spans}
        tree = sorted((s.name, s.span_type, names.get(s.parent_id, "")) for s in spans)
        assert tree == [
            ("inner", "CHAIN", "outer"),
            ("outer", "CHAIN", "root"),
            ("root", "UNKNOWN", ""),
        ]


def test_a_tracer_without_content_never_hands_content_to_mlflow(mlflow_uri: str) -> None:
    """With a placeholder, MLflow gets the placeholder in place of each chain's inputs and
    outputs and each chat model's messages: it never serializes them (a map's chain spans
    carry its whole state), while the chat span keeps its token usage."""
    import mlflow
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.runnables import RunnableLambda

    from agents_pipelines._compat.mlflow import langchain_tracer
    from agents_pipelines.tracking.export import drain_trace_export

    serialized: list[str] = []

    class State(dict[str, Any]):  # what MLflow would serialize, counted
        def items(self) -> Any:
            serialized.append("state")
            return super().items()

    reply = AIMessage(
        "a reply", usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    )
    chat = GenericFakeChatModel(messages=iter([reply]))
    step = RunnableLambda(lambda state: {"reply": chat.invoke(state["prompt"]).text}, name="step")
    with mlflow.start_span("root") as root:
        with hook("mlflow.langchain_tracer"):
            tracer = langchain_tracer("P")
        result = step.invoke(State(prompt="a secret prompt"), {"callbacks": [tracer]})
    assert result == {"reply": "a reply"}
    drain_trace_export()
    stored = mlflow.get_trace(root.trace_id)
    assert stored is not None
    spans = {span.name: span for span in stored.data.spans}
    assert serialized == []
    assert (spans["step"].inputs, spans["step"].outputs) == ("P", "P")
    chat_span = spans["GenericFakeChatModel"]
    assert chat_span.inputs == []
    assert chat_span.get_attribute("mlflow.chat.tokenUsage") == {
        "input_tokens": 3,
        "output_tokens": 2,
        "total_tokens": 5,
    }
    assert "a secret prompt" not in json.dumps(stored.to_dict())


def test_span_processors_in_use_lists_what_configure_set() -> None:
    from mlflow.tracing import configure

    from agents_pipelines._compat.mlflow import span_processors_in_use

    def ours(span: Any) -> None:
        pass

    with hook("mlflow.span_processors_in_use"), configure(span_processors=[ours]):
        assert span_processors_in_use() == [ours]


def _trace_of(mlflow_uri: str, processor: Any, body: Any) -> Any:
    """The stored trace of one span, ``body(span)`` run on it, ``processor`` before export."""
    import mlflow
    from mlflow.tracing import configure

    from agents_pipelines.tracking.export import drain_trace_export

    with configure(span_processors=[processor]):
        with mlflow.start_span("probe") as span:
            body(span)
        trace_id = span.trace_id
        drain_trace_export()
    return mlflow.get_trace(trace_id)


def test_raw_span_holds_the_json_text_mlflow_stores(mlflow_uri: str) -> None:
    from agents_pipelines._compat.mlflow import raw_span

    seen: dict[str, Any] = {}

    def processor(span: Any) -> None:
        otel = raw_span(span)
        seen["raw"] = otel.attributes["probe.value"]
        otel.set_attribute("probe.value", '{"key": "[redacted]"}')

    trace = _trace_of(mlflow_uri, processor, lambda s: s.set_attribute("probe.value", {"key": 1}))
    with hook("mlflow.raw_span"):
        assert seen["raw"] == '{"key": 1}'
        assert trace.data.spans[0].get_attribute("probe.value") == {"key": "[redacted]"}


def test_replace_event_attributes_changes_the_exported_event(mlflow_uri: str) -> None:
    from mlflow.entities import SpanEvent

    from agents_pipelines._compat.mlflow import raw_span, replace_event_attributes

    def processor(span: Any) -> None:
        for event in raw_span(span).events:
            replace_event_attributes(event, {"exception.message": "key [redacted]"})

    def body(span: Any) -> None:
        span.add_event(SpanEvent("exception", attributes={"exception.message": "key AIza-x"}))

    trace = _trace_of(mlflow_uri, processor, body)
    with hook("mlflow.replace_event_attributes"):
        events = trace.data.spans[0].events
        assert [e.attributes for e in events] == [{"exception.message": "key [redacted]"}]


def test_wrap_exporter_client_sees_every_trace_write(mlflow_uri: str) -> None:
    import mlflow
    from mlflow.tracing.client import TracingClient

    from agents_pipelines._compat.mlflow import ExporterClientProxy, wrap_exporter_client
    from agents_pipelines.tracking.export import drain_trace_export

    calls: list[str] = []

    class Recording(ExporterClientProxy):
        def start_trace(self, trace_info: Any) -> Any:
            calls.append("start_trace")
            return self.inner.start_trace(trace_info)

        def log_spans(self, location: str, spans: list[Any]) -> Any:
            calls.append("log_spans")
            return self.inner.log_spans(location, spans)

    with mlflow.start_span("warm-up"):  # MLflow builds its exporter with the first trace
        pass
    drain_trace_export()
    with hook("mlflow.wrap_exporter_client"):
        assert wrap_exporter_client(Recording) is True
        assert wrap_exporter_client(Recording) is True  # not wrapped twice
        with mlflow.start_span("probe") as span:
            pass
        drain_trace_export()
        assert "start_trace" in calls, calls
        assert mlflow.get_trace(span.trace_id) is not None
    with hook("mlflow.ExporterClientProxy"):
        upload = inspect.signature(TracingClient._upload_trace_data).parameters
        assert list(upload) == ["self", "trace_info", "trace_data"], list(upload)


def test_drain_export_queue_waits_for_an_async_trace(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from agents_pipelines._compat.mlflow import drain_export_queue

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "true")
    with mlflow.start_span("probe") as span:
        pass
    with hook("mlflow.drain_export_queue"):
        assert drain_export_queue() is True
        assert mlflow.get_trace(span.trace_id) is not None


def test_stop_mlflow_span_metrics_keeps_mlflow_from_recording_span_durations(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracing.provider import _get_span_processor

    from agents_pipelines._compat.mlflow import stop_mlflow_span_metrics

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:9/v1/metrics")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    mlflow.tracing.reset()  # MLflow decides on its metrics as it makes its provider
    try:
        with mlflow.start_span("probe"):
            processor = _get_span_processor()
            with hook("mlflow.stop_mlflow_span_metrics"):
                assert processor._export_metrics is True  # what the endpoint turned on
                assert stop_mlflow_span_metrics() is True
        with hook("mlflow.stop_mlflow_span_metrics"):
            assert processor._duration_histogram is None  # never set up, nothing recorded
    finally:
        mlflow.tracing.reset()


def test_bundled_prices_and_catalog_files_agree() -> None:
    import json

    from agents_pipelines._compat.mlflow import bundled_catalog_files, bundled_cost_per_token

    with hook("mlflow.bundled_catalog_files"):
        files = bundled_catalog_files()
        assert "gemini" in {path.stem for path in files}, files
        gemini = json.loads(next(p for p in files if p.stem == "gemini").read_text("utf-8"))
        pricing = gemini["models"]["gemini-2.5-flash"]["pricing"]
        input_rate = pricing["input_per_million_tokens"] / 1_000_000
        output_rate = pricing["output_per_million_tokens"] / 1_000_000
    with hook("mlflow.bundled_cost_per_token"):
        cost = bundled_cost_per_token("gemini-2.5-flash", 1_000, 100, 0)
        assert cost == pytest.approx((1_000 * input_rate, 100 * output_rate)), cost


def test_span_totals_sum_usage_and_cost(mlflow_uri: str) -> None:
    from agents_pipelines._compat.mlflow import SpanAttributeKey, span_totals

    def body(span: Any) -> None:
        span.set_attribute(
            SpanAttributeKey.CHAT_USAGE,
            {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
        )
        span.set_attribute(
            SpanAttributeKey.LLM_COST,
            {"input_cost": 0.5, "output_cost": 0.25, "total_cost": 0.75},
        )

    trace = _trace_of(mlflow_uri, lambda span: None, body)
    with hook("mlflow.span_totals"):
        usage, cost = span_totals(trace.data.spans)
        assert usage["input_tokens"] == 7 and usage["total_tokens"] == 10, usage
        assert cost["total_cost"] == pytest.approx(0.75), cost


def test_hard_delete_run_removes_the_run_and_its_artifacts(mlflow_uri: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from agents_pipelines._compat.mlflow import hard_delete_run

    client = MlflowClient()
    run = client.create_run(client.create_experiment("gone", str(tmp_path / "artifacts")))
    note = tmp_path / "note.txt"
    note.write_text("kept until deleted", encoding="utf-8")
    client.log_artifact(run.info.run_id, str(note))
    folder = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (folder / "note.txt").is_file()
    client.delete_run(run.info.run_id)
    with hook("mlflow.hard_delete_run"):
        assert hard_delete_run(mlflow_uri, run.info.run_id, run.info.artifact_uri) is True
        found = client.search_runs([run.info.experiment_id], run_view_type=ViewType.ALL)
        assert found == [] and not folder.exists()


def test_mlflow_keys_we_read_and_write_exist() -> None:
    from agents_pipelines._compat.mlflow import SpanAttributeKey, TraceMetadataKey

    with hook("mlflow.SpanAttributeKey"):
        assert SpanAttributeKey.CHAT_USAGE == "mlflow.chat.tokenUsage"
        assert SpanAttributeKey.MODEL and SpanAttributeKey.LLM_COST
    with hook("mlflow.TraceMetadataKey"):
        assert TraceMetadataKey.COST
        assert TraceMetadataKey.SOURCE_RUN == "mlflow.sourceRun"


# --- LangGraph and LangChain --------------------------------------------------------------


def test_stream_only_returns_the_public_channels() -> None:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    from agents_pipelines._compat.langgraph import stream_only

    class State(TypedDict, total=False):
        answer: str
        bookkeeping: int

    graph = StateGraph(State)
    graph.add_node("step", lambda state: {"answer": "yes", "bookkeeping": 3})
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    with hook("langgraph.stream_only"):
        compiled = stream_only(graph.compile(), ["answer"])
        values = list(compiled.stream({"answer": ""}, stream_mode="values"))
        assert values[-1] == {"answer": "yes"}, values


def test_config_context_is_the_config_of_calls_made_in_it() -> None:
    from langchain_core.runnables.config import ensure_config

    from agents_pipelines._compat.langgraph import config_context

    with hook("langgraph.config_context"):
        with config_context({"metadata": {"probe": 7}}) as context:
            inside = context.run(ensure_config)
        assert inside["metadata"]["probe"] == 7
        assert "probe" not in ensure_config().get("metadata", {})


def _assert_saver_hooks(saver: Any, connection_type: type) -> None:
    from agents_pipelines._compat.langgraph import saver_connection, saver_lock

    with hook("langgraph.saver_connection"):
        assert isinstance(saver_connection(saver), connection_type)
    with hook("langgraph.saver_lock"):
        lock = saver_lock(saver)
        with lock:  # the saver's own calls wait for it
            done = threading.Event()
            worker = threading.Thread(target=lambda: (list(saver.list(None)), done.set()))
            worker.start()
            assert not done.wait(0.3), "the saver did not take the lock"
        worker.join(10)
        assert done.is_set()


def test_sqlite_saver_hooks() -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    saver = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
    saver.setup()
    _assert_saver_hooks(saver, sqlite3.Connection)


@pytest.mark.postgres
def test_postgres_saver_hooks(postgres_database: str) -> None:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(postgres_database) as saver:
        saver.setup()
        _assert_saver_hooks(saver, psycopg.Connection)


def test_saver_serializer_stores_through_ours() -> None:
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.sqlite import SqliteSaver

    from agents_pipelines._compat.langgraph import saver_serializer, set_saver_serializer

    saver = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
    stored: list[Any] = []
    inner = saver_serializer(saver)

    class Counting:
        def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
            stored.append(obj)
            return inner.dumps_typed(obj)

        def loads_typed(self, data: tuple[str, bytes]) -> Any:
            return inner.loads_typed(data)

    with hook("langgraph.set_saver_serializer"):
        set_saver_serializer(saver, Counting())
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        written = saver.put_writes(
            saver.put(config, empty_checkpoint(), {}, {}), [("channel", "value")], "task"
        )
        assert written is None
        assert "value" in stored, stored


def test_checkpoint_ids_decode_to_their_time() -> None:
    """Checkpoint ids are LangGraph's UUIDv6: checkpoints.uuid6_time (stdlib only) reads the
    time langgraph.checkpoint.base.id wrote into them."""
    from langgraph.checkpoint.base import empty_checkpoint

    from agents_pipelines.orchestration.stores.checkpoints import _unix_s, uuid6_time

    before = time.time()
    checkpoint_id = empty_checkpoint()["id"]
    assert abs(_unix_s(uuid6_time(checkpoint_id)) - before) < 5
    from langgraph.checkpoint.base.id import UUID

    assert uuid6_time(checkpoint_id) == UUID(checkpoint_id).time


# --- google-genai -------------------------------------------------------------------------


def _genai_client(handler: Any) -> Any:
    from google import genai
    from google.genai import types

    from agents_pipelines._compat.genai import sdk_http

    options = types.HttpOptions(
        base_url="http://gemini.invalid",
        client_args={"transport": sdk_http.MockTransport(handler)},
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key="not-a-key", http_options=options)


def test_sdk_http_transport_is_the_one_google_genai_calls() -> None:
    from agents_pipelines._compat.genai import sdk_http

    requests: list[Any] = []

    def handler(request: Any) -> Any:
        requests.append(request)
        reply = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}}]}
        return sdk_http.Response(200, json=reply)

    with hook("genai.sdk_http"):
        client = _genai_client(handler)  # kept: a Client closes its HTTP client when collected
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="hello")
        assert reply.text == "hi"
        assert [r.url.host for r in requests] == ["gemini.invalid"]


def test_transport_error_types_catch_a_timeout_of_google_genai() -> None:
    from agents_pipelines._compat.genai import sdk_http, transport_error_types

    def handler(request: Any) -> Any:
        raise sdk_http.ReadTimeout("slow", request=request)

    client = _genai_client(handler)  # kept: a Client closes its HTTP client when collected
    with hook("genai.transport_error_types"), pytest.raises(transport_error_types()):
        client.models.generate_content(model="gemini-2.5-flash", contents="x")


def test_client_loggers_are_the_ones_the_client_stack_logs_to() -> None:
    import google.genai
    import langchain_google_genai  # noqa: F401

    from agents_pipelines._compat.genai import CLIENT_LOGGERS

    assert google.genai
    with hook("genai.CLIENT_LOGGERS"):
        known = logging.Logger.manager.loggerDict
        missing = [name for name in CLIENT_LOGGERS if name not in known]
        assert missing == [], f"no library logs to {missing}"


# --- The rule: private upstream names stay in the compat package --------------------------


def test_no_module_outside_compat_touches_a_private_upstream_name() -> None:
    found = private_upstream_names.all_findings()
    assert found == [], (
        "Private or undocumented upstream names outside agents_pipelines._compat (move each "
        "into a hook there, with a docstring and a test here):\n" + "\n".join(found)
    )


def test_the_rule_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        "from dagster._config import validate_config\n"
        "from mlflow.utils.providers import cost_per_token\n"
        "from langchain_core.runnables.config import var_child_runnable_config\n"
        "import httpx2\n"
        "span._span.set_attribute('k', 'v')\n"
        "exporter._client = None\n"
        "getattr(interrupts, '_received_interrupt')\n"
        "saver.serde = None\n"
        "graph.copy({'stream_channels': []})\n"
        "logger = 'google_genai._api_client'\n"
        "class Client:\n"
        "    def _upload_trace_data(self): ...\n"
    )
    found = sorted(
        f.split(": ", 1)[1] for f in private_upstream_names.findings(module, frozenset())
    )
    assert found == sorted(
        [
            "from dagster._config import ...",
            "from mlflow.utils.providers import ...",
            "from langchain_core.runnables.config import var_child_runnable_config",
            "import httpx2",
            "._span",
            "._client",
            'getattr(..., "_received_interrupt")',
            ".serde",
            "'stream_channels'",
            "'google_genai._api_client'",
            "def _upload_trace_data",
        ]
    ), found


def test_the_compat_modules_are_the_ones_the_rule_exempts() -> None:
    names = {path.stem for path in private_upstream_names.python_files(inside_compat=True)}
    assert names == {"__init__", "dagster", "mlflow", "langgraph", "genai"}


def test_released_spans_leave_the_trace_manager_and_the_trace_stays_whole(
    mlflow_uri: str,
) -> None:
    """An ended child span, once released, leaves MLflow's trace manager: a stub of ids
    stays while its OpenTelemetry span is alive, and a span started under it after it ended
    keeps its trace; a stub nothing needs goes; ``drop_released_spans`` takes the rest out
    before the root ends, and MLflow then stores the trace it still holds."""
    import gc

    import mlflow
    from mlflow.entities import LiveSpan
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    from agents_pipelines._compat.mlflow import (
        ReleasedSpan,
        drop_released_spans,
        release_ended_spans,
        span_json_size,
        trace_info_now,
    )
    from agents_pipelines.tracking.export import drain_trace_export

    manager = InMemoryTraceManager.get_instance()
    taken: list[str] = []
    with mlflow.start_span("root") as root:
        info = trace_info_now(root.trace_id)
        assert info is not None and info.trace_id == root.trace_id
        info.trace_metadata["copy"] = "yes"
        with manager.get_trace(root.trace_id) as held:  # a copy: the trace's own is unchanged
            assert held is not None and "copy" not in held.info.trace_metadata
        kept = mlflow.start_span_no_context("kept", parent_span=root, inputs={"q": 1})
        kept.end()
        gone = mlflow.start_span_no_context("gone", parent_span=root)
        gone.end()
        assert span_json_size(kept) == len(json.dumps(kept.to_dict()).encode())
        open_ = mlflow.start_span_no_context("open", parent_span=root)
        drain_trace_export()  # kept and gone are stored: only stored spans are released

        def take(spans: list[Any]) -> bool:
            taken.extend(span.name for span in spans)
            return True

        ids = [kept.span_id, gone.span_id, open_.span_id, root.span_id]
        release_ended_spans(root.trace_id, ids, take)
        assert taken == ["kept", "gone"]  # not the open span, nor the root
        stub = manager.get_span_from_id(root.trace_id, kept.span_id)
        assert isinstance(stub, ReleasedSpan) and stub.parent_id == root.span_id
        assert stub.get_attribute("mlflow.chat.tokenUsage") is None
        late = mlflow.start_span_no_context("late", parent_span=stub)  # kept's span alive
        assert isinstance(late, LiveSpan) and late.trace_id == root.trace_id
        late.end()
        gone_id = gone.span_id
        del gone
        gc.collect()
        release_ended_spans(root.trace_id, [], take)  # sweeps: no one holds gone's span
        assert manager.get_span_from_id(root.trace_id, gone_id) is None
        assert release_ended_spans(root.trace_id, [late.span_id], lambda spans: False) is None
        assert isinstance(manager.get_span_from_id(root.trace_id, late.span_id), LiveSpan)
        open_.end()
        closed: list[bool] = []
        drop_released_spans(root.trace_id, then=closed.append)
        drop_released_spans("tr-unknown", then=closed.append)
        assert closed == [True, False]
        assert manager.get_span_from_id(root.trace_id, kept.span_id) is None
    drain_trace_export()
    stored = mlflow.get_trace(root.trace_id)
    assert stored is not None
    names = {s.name for s in stored.data.spans}
    assert names == {"root", "kept", "gone", "open", "late"}  # each stored as it ended
    late_span = next(s for s in stored.data.spans if s.name == "late")
    assert late_span.parent_id == kept.span_id
