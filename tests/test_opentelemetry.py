"""OpenTelemetry: each run's trace goes to a collector (the loopback OTLP receiver) as well
as to MLflow, with the GenAI conventions' attributes, and its GenAI metrics total what the
run's Dagster metadata says. Materialized by Dagster, with the real Gemini client against
the loopback server, into a brand-new MLflow store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from agents_pipelines import telemetry
from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.settings import settings
from agents_pipelines.spec import load_workflow
from agents_pipelines.telemetry.genai_metrics import COST, OPERATION_DURATION, TOKEN_USAGE
from agents_pipelines.testing import GeminiLoopbackServer, OtlpLoopbackReceiver
from agents_pipelines.tracking import drain_trace_export
from conftest import EXAMPLES, LINEAR, REPO, metadata_of

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpLoopbackReceiver]:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with OtlpLoopbackReceiver() as running:
        yield running
        telemetry.shutdown()  # its exporters point at a receiver about to stop


def materialize(path: Path, partition: str | None = None) -> dg.ExecuteInProcessResult:
    asset = build_workflow_asset(load_workflow(path))
    result = dg.materialize(
        [asset], resources={"workflow_runner": WorkflowRunner()}, partition_key=partition
    )
    assert result.success
    return result


def test_with_the_standard_variable_the_trace_reaches_mlflow_and_the_collector(
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    receiver: OtlpLoopbackReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t0k3n")
    meta = metadata_of(materialize(EXAMPLES / "article_writer.yaml"), "article_writer")

    # MLflow kept its copy: the trace, every span of it.
    drain_trace_export()
    trace = mlflow.get_trace(meta["mlflow_trace_id"])
    assert trace is not None
    stored = {span.span_id for span in trace.data.spans}
    assert len([s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]) == 4

    # The collector got the same spans, once each, already processed by our span policy.
    received = [s for s in receiver.spans() if s.trace_id == trace.info.trace_id[3:]]
    assert sorted(s.span_id for s in received) == sorted(stored)
    llm = [s for s in received if "gen_ai.system" in s.attributes]
    assert len(llm) == 4
    for span in llm:
        assert span.attributes["gen_ai.system"] == "gcp.gemini"
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert span.attributes["mlflow.spanInputs"].startswith('"[not recorded')
    assert sorted(s.attributes["gen_ai.request.model"] for s in llm) == [
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
    ]
    assert sum(s.attributes["gen_ai.usage.input_tokens"] for s in llm) == meta["prompt_tokens"]
    assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in llm) == meta["completion_tokens"]
    assert all(h.get("x-collector-token") == "t0k3n" for h in receiver.headers)

    # The metrics total what the run's metadata says.
    assert receiver.total(TOKEN_USAGE, **{"gen_ai.token.type": "input"}) == meta["prompt_tokens"]
    assert (
        receiver.total(TOKEN_USAGE, **{"gen_ai.token.type": "output"}) == meta["completion_tokens"]
    )
    assert receiver.total(TOKEN_USAGE) == meta["total_tokens"]
    assert receiver.total(COST, workflow="article_writer") == pytest.approx(
        meta["total_cost_usd"], abs=1e-12
    )
    durations = [p for p in receiver.metric_points() if p.metric == OPERATION_DURATION]
    assert sum(p.count for p in durations) == meta["llm_calls"]
    units = {p.metric: p.unit for p in receiver.metric_points()}
    assert units == {TOKEN_USAGE: "{token}", OPERATION_DURATION: "s", COST: "USD"}
    # The Prometheus name the docs' query uses, as the collector's exporter derives it: dots
    # to underscores, the unit, and _total for a monotonic sum.
    cost = next(p for p in receiver.metric_points() if p.metric == COST)
    promql = re.search(r"```promql\n(.*?)```", (REPO / "docs" / "deployment.md").read_text(), re.S)
    assert promql is not None
    prometheus_name = f"{cost.metric.replace('.', '_')}_{cost.unit}_total"
    assert f"increase({prometheus_name}[1d])" in promql.group(1)
    assert "by (workflow)" in promql.group(1)
    by_node = {p.attributes["node"]: p.value for p in receiver.metric_points() if p.metric == COST}
    rows = {row.data["node"]: row.data["cost_usd"] for row in meta["node_calls"].records}
    assert by_node == pytest.approx(rows, abs=1e-12)


def test_a_workflow_names_its_collector_and_each_partition_is_counted_apart(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    receiver: OtlpLoopbackReceiver,
) -> None:
    text = (EXAMPLES / "product_blurb.yaml").read_text()
    block = "    mlflow: {experiment_name: my_workflows}\n"
    assert block in text
    path = tmp_path / "product_blurb.yaml"
    path.write_text(text.replace(block, f"{block}    otlp: {{endpoint: '{receiver.endpoint}'}}\n"))

    costs = {}
    for key in ("en", "fr"):
        meta = metadata_of(materialize(path, key), "product_blurb")
        costs[key] = meta["total_cost_usd"]
        drain_trace_export()
        assert mlflow.get_trace(meta["mlflow_trace_id"]) is not None
    for key, cost in costs.items():
        assert receiver.total(COST, partition=key) == pytest.approx(cost, abs=1e-12)
        points = [p for p in receiver.metric_points() if p.attributes.get("partition") == key]
        assert {p.attributes["model"] for p in points} == {"gemini-2.5-flash-lite"}
    traces = {s.trace_id for s in receiver.spans()}
    assert len(traces) == 2


@pytest.mark.parametrize("temporality", [None, "cumulative"])
def test_metrics_of_several_runs_add_up_even_with_mlflow_tracking_off(
    tmp_path: Path,
    mlflow_uri: str,
    gemini: GeminiLoopbackServer,
    receiver: OtlpLoopbackReceiver,
    monkeypatch: pytest.MonkeyPatch,
    temporality: str | None,
) -> None:
    """Deltas by default (each run's process may be its own), or what the standard
    variable asks for: either way the collector's totals are the runs' totals."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"{receiver.endpoint}/v1/metrics")
    if temporality:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", temporality)
    text = (EXAMPLES / "product_blurb.yaml").read_text()
    path = tmp_path / "product_blurb.yaml"
    path.write_text(text.replace("{experiment_name: my_workflows}", "{enabled: false}"))
    runs = [metadata_of(materialize(path, "de"), "product_blurb") for _ in range(2)]
    assert all("mlflow_run_id" not in meta for meta in runs)
    assert receiver.spans() == []  # only the metrics endpoint was named
    assert receiver.total(COST, partition="de") == pytest.approx(
        sum(meta["total_cost_usd"] for meta in runs), abs=1e-12
    )
    assert receiver.total(TOKEN_USAGE) == sum(meta["total_tokens"] for meta in runs)


def test_a_protocol_no_exporter_speaks_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(
        AgentsPipelinesError,
        match=r"OTEL_EXPORTER_OTLP_PROTOCOL='http/json'.*"
        r"one of http/protobuf, grpc",
    ):
        settings()


def test_a_collector_that_is_down_costs_the_run_nothing_but_a_warning(
    tmp_path: Path, mlflow_uri: str, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measured bug: the variable set, MLflow recorded a no-op trace. Nothing listens
    at this endpoint; the run succeeds and MLflow has the whole trace."""
    import socket

    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:  # a port that was free a moment ago, closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # seconds of retries, per export
    path = tmp_path / "wf.yaml"
    path.write_text(LINEAR)
    try:
        meta = metadata_of(materialize(path), "linear")
    finally:
        telemetry.shutdown()
    drain_trace_export()
    trace = mlflow.get_trace(meta["mlflow_trace_id"])
    assert trace is not None
    assert [s.span_type for s in trace.data.spans].count("CHAT_MODEL") == 1
    chat = next(s for s in trace.data.spans if s.span_type == "CHAT_MODEL")
    assert chat.attributes["gen_ai.usage.input_tokens"] == meta["prompt_tokens"]
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]  # simulated too
