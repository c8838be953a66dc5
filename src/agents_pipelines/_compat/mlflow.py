"""MLflow's private and undocumented APIs that agents_pipelines uses (mlflow 3.17.2 and
opentelemetry-sdk 1.45.2 checked).

Imports of mlflow happen inside the hooks: importing mlflow costs seconds, and the code
location loads without it (tracking/pricing.py's BundledCatalogPrices reads the catalog files
without importing mlflow).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey

__all__ = [
    "ExporterClientProxy",
    "ReleasedSpan",
    "SpanAttributeKey",
    "TraceMetadataKey",
    "bundled_catalog_files",
    "bundled_cost_per_token",
    "drain_export_queue",
    "drop_released_spans",
    "hard_delete_run",
    "import_langchain_tracer",
    "langchain_tracer",
    "raw_span",
    "release_ended_spans",
    "replace_event_attributes",
    "span_json_size",
    "span_processors_in_use",
    "span_totals",
    "stop_mlflow_span_metrics",
    "trace_info_now",
    "wrap_exporter_client",
]


def __getattr__(name: str) -> Any:
    # The attribute and metadata keys MLflow writes (``mlflow.tracing.constant``, not in
    # MLflow's API reference), imported on first use so this module does not import mlflow.
    if name in ("SpanAttributeKey", "TraceMetadataKey"):
        from mlflow.tracing import constant

        return getattr(constant, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def span_processors_in_use() -> list[Callable[[Any], None]]:
    """The span processors MLflow runs now (what ``mlflow.tracing.configure`` last set).

    Why: ``configure(span_processors=...)`` replaces the list, and MLflow resets it when the
    tracking URI changes; adding ours keeps the others. Uses ``mlflow.tracing.config
    .get_config`` (not exported by ``mlflow.tracing``). Public replacement: none to read the
    list; ``mlflow.tracing.configure`` sets it.
    """
    from mlflow.tracing.config import get_config

    return list(get_config().span_processors)


def langchain_tracer(placeholder: str | None = None) -> Any:
    """A new MLflow LangChain tracer (a LangChain callback handler that turns each run of a
    chain, node, chat model or tool into a span), made as ``mlflow.langchain.autolog`` makes
    it with ``run_tracer_inline=True``: its spans start and end on the caller's task (on
    LangGraph's async path, map items, MLflow would otherwise hand each span's start and
    end to a thread pool).

    With ``placeholder``, its spans carry no content: each chain's and tool's inputs and
    outputs, and each chat model's messages, are ``placeholder`` when they reach MLflow
    (a chat model's reply still does, for its token usage). MLflow serializes every span's
    inputs and outputs to JSON as it sets them, before any span processor sees the span:
    a map node's spans carry the whole state, so a run that records no content paid that
    for nothing, and a 4,000-item map held 20 MB of it at once (benchmark 7).

    Why: autolog adds this handler by patching LangChain's ``BaseCallbackManager.__init__``
    through MLflow's ``safe_patch``, which wraps every callback manager LangChain makes
    (about 11 per map item call: each ``copy``, ``get_child``, ``configure``) in
    ``inspect.signature`` and warning rerouting; the patch is process-wide. A handler in the
    run's config callbacks gives the same spans, since LangChain hands inheritable handlers
    to every child run, and costs nothing per callback manager. Uses
    ``mlflow.langchain.langchain_tracer.MlflowLangchainTracer`` (not in MLflow's API
    reference; mlflow 3.17.2 checked), its ``run_inline`` argument and, with
    ``placeholder``, a subclass of its callback methods. Public replacement:
    ``mlflow.langchain.autolog(run_tracer_inline=True)``; none for spans without content
    (a span processor drops content only after MLflow has serialized it).
    """
    from mlflow.langchain.langchain_tracer import MlflowLangchainTracer

    if placeholder is None:
        return MlflowLangchainTracer(run_inline=True)
    return _contentless_tracer_class()(placeholder)


@functools.cache
def _contentless_tracer_class() -> type:
    """MLflow's LangChain tracer with every chain, tool and prompt content replaced before
    MLflow serializes it (``langchain_tracer``). A class made on first use: defining it
    imports MLflow and LangChain."""
    from mlflow.langchain.langchain_tracer import MlflowLangchainTracer

    class ContentlessTracer(MlflowLangchainTracer):
        def __init__(self, placeholder: str):
            super().__init__(run_inline=True)
            self.placeholder = placeholder

        def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> Any:
            # No messages: MLflow stores the empty batch as the inputs (no conversion).
            return super().on_chat_model_start(serialized, [], **kwargs)

        def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> Any:
            return super().on_llm_start(serialized, [self.placeholder], **kwargs)

        def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> Any:
            return super().on_chain_start(serialized, self.placeholder, **kwargs)

        def on_chain_end(self, outputs: Any, *, inputs: Any = None, **kwargs: Any) -> Any:
            # The placeholder where MLflow takes a dict: it serializes any value alike.
            return super().on_chain_end(self.placeholder, **kwargs)  # type: ignore[arg-type]

        def on_chain_error(self, error: Any, *, inputs: Any = None, **kwargs: Any) -> Any:
            return super().on_chain_error(error, **kwargs)

        def on_tool_start(
            self, serialized: Any, input_str: str, *, inputs: Any = None, **kwargs: Any
        ) -> Any:
            return super().on_tool_start(serialized, self.placeholder, **kwargs)

        def on_tool_end(self, output: Any, **kwargs: Any) -> Any:
            return super().on_tool_end(self.placeholder, **kwargs)

    return ContentlessTracer


def import_langchain_tracer() -> None:
    """Import what ``langchain_tracer`` needs (MLflow, LangChain, the tracer's module) ahead
    of a run. Why and public replacement: as ``langchain_tracer``."""
    import mlflow.langchain.langchain_tracer  # noqa: F401


def raw_span(span: Any) -> Any:
    """The OpenTelemetry span below MLflow's ``LiveSpan``.

    Why: its attributes are the JSON text MLflow stores, so a span processor redacts or
    escapes that text without decoding every attribute (inputs and outputs can be large), and
    its events are the ones exported. Uses ``LiveSpan._span``. Public replacement:
    ``LiveSpan.attributes`` and ``set_attribute`` (decoded values, one JSON round trip per
    attribute); none for events. Redacting keys through the public route measured 5.7 to
    6.7 ms per span against 0.6 to 1.0 ms here (a chat span with 20 KB of state, 300 spans).
    """
    return span._span


def replace_event_attributes(event: Any, attributes: Mapping[str, Any]) -> None:
    """Give an OpenTelemetry span event new attributes (an exception event's message).

    Why: the provider's error text may repeat the API key, and an ``Event`` has no setter.
    The events come from ``raw_span(span).events``; this sets ``Event._attributes``.
    Public replacement: none in OpenTelemetry's SDK.
    """
    event._attributes = dict(attributes)


def stop_mlflow_span_metrics() -> bool:
    """Stop MLflow's span processor from recording its own span-duration histogram; False
    if MLflow's internals moved.

    Why: with an OTLP metrics endpoint in the environment, MLflow's processor records
    ``mlflow.trace.span.duration`` through a MeterProvider of its own, which it makes the
    process's global one, exports over gRPC unless told otherwise, and only every 60 s (a
    short run process loses it). Each point is labelled with its trace's tags and metadata,
    among them the MLflow run id: one Prometheus series per run. telemetry/genai_metrics.py
    exports the GenAI conventions' metrics instead. Uses ``mlflow.tracing.provider
    ._get_span_processor`` and the processor's ``_export_metrics``. Public replacement: none
    (MLflow reads only whether an OTLP metrics endpoint is set).
    """
    from mlflow.tracing.provider import _get_span_processor

    processor = _get_span_processor()
    if processor is None or not hasattr(processor, "_export_metrics"):
        return False
    processor._export_metrics = False
    return True


def _trace_exporter() -> Any:
    from mlflow.tracing.provider import _get_trace_exporter

    return _get_trace_exporter()


def wrap_exporter_client(wrapper: type[ExporterClientProxy]) -> bool:
    """Replace the trace exporter's store client by ``wrapper(client)`` unless it is one
    already; False if the exporter has no such client.

    Why: MLflow's exporter logs a failed trace write as a warning and moves on; wrapping its
    client tells a run whether its trace was stored, and lets span batches grow with the trace
    (tracking/trace_outcome.py). Uses ``mlflow.tracing.provider._get_trace_exporter`` and the
    exporter's ``_client`` (an ``MlflowV3SpanExporter``'s ``TracingClient``). Public
    replacement: none; ``mlflow.get_trace`` afterwards tells only whether the trace exists.
    """
    exporter = _trace_exporter()
    client = getattr(exporter, "_client", None)
    if client is None or not hasattr(client, "start_trace"):
        return False
    if not isinstance(client, wrapper):
        exporter._client = wrapper(client)
    return True


class ExporterClientProxy:
    """A stand-in for the exporter's ``TracingClient``: every call goes to ``inner``; a
    subclass overrides ``start_trace``, ``log_spans`` or ``upload_trace_data``.

    Why: the exporter stores spans that the store cannot keep itself through the client's
    private ``_upload_trace_data(trace_info, trace_data)``; a wrapper that records failures
    must see those too. Public replacement: none.
    """

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _upload_trace_data(self, trace_info: Any, trace_data: Any) -> None:
        self.upload_trace_data(trace_info, trace_data)

    def upload_trace_data(self, trace_info: Any, trace_data: Any) -> None:
        self.inner._upload_trace_data(trace_info, trace_data)


def drain_export_queue() -> bool:
    """Flush the span batchers and wait until the export queue is empty; False if MLflow's
    internals moved (the caller then uses the public flush).

    Why: ``mlflow.flush_trace_async_logging()`` stops and restarts the export thread, which
    wakes from a one-second queue poll: 1.3 to 1.6 s per call, measured against 0.1 to
    0.55 s here for one trace on SQLite; joining the queue returns once the last write is
    done. Uses ``mlflow.tracing.processor.base_mlflow
    .flush_all_batch_processors``, the exporter's ``_async_queue`` and its ``_queue`` (a
    ``queue.Queue``). Public replacement: ``mlflow.flush_trace_async_logging()``.
    """
    try:
        from mlflow.tracing.processor.base_mlflow import flush_all_batch_processors

        flush_all_batch_processors()
        queue = getattr(_trace_exporter(), "_async_queue", None)
    except (ImportError, AttributeError):
        return False
    tasks = getattr(queue, "_queue", None)
    if tasks is None or not hasattr(tasks, "join"):
        return False
    tasks.join()
    return True


class ReleasedSpan:
    """What stays in MLflow's trace manager of an ended span once it is stored: its ids
    and times, no content (about 200 bytes, against about 5 KB for a ``LiveSpan`` and the
    OpenTelemetry span below it).

    A span can start below an ended span: LangGraph makes a ``Send``'s task a child of the
    task that sent it, and MLflow finds the parent by its id in the trace manager
    (``mlflow.get_current_active_span``, the LangChain tracer's ``_resolve_parent_span``).
    So the stub stays while its OpenTelemetry span is alive (a context still holds it) or
    a span in the trace manager names it as parent; ``release_ended_spans`` drops it after.
    Reads ``LiveSpan._span`` and gives ``_span`` (what MLflow reads of a parent span;
    mlflow 3.17.2 checked). Public replacement: none.
    """

    __slots__ = (
        "_context",
        "_otel",
        "end_time_ns",
        "parent_id",
        "span_id",
        "start_time_ns",
        "trace_id",
    )

    def __init__(self, span: Any):
        import weakref

        self.span_id, self.parent_id = span.span_id, span.parent_id
        self.trace_id, self.start_time_ns = span.trace_id, span.start_time_ns
        self.end_time_ns = span.end_time_ns
        otel = span._span
        self._context = otel.get_span_context()
        self._otel = weakref.ref(otel)

    @property
    def _span(self) -> Any:
        """What a child's start reads from its parent (``parent_span._span``)."""
        if (otel := self._otel()) is not None:
            return otel
        from opentelemetry.trace import NonRecordingSpan

        return NonRecordingSpan(self._context)

    @property
    def request_id(self) -> str:
        return str(self.trace_id)

    def is_referenced(self) -> bool:
        """Whether its OpenTelemetry span is still alive: a context may start a child."""
        return self._otel() is not None

    def get_attribute(self, key: str) -> None:
        return None  # no content: its usage and cost were counted when it was released


def release_ended_spans(
    trace_id: str, span_ids: Iterable[str], take: Callable[[list[Any]], bool]
) -> None:
    """Take the ended child spans ``span_ids`` of ``trace_id`` out of MLflow's trace
    manager, each replaced by a ``ReleasedSpan``, if ``take(spans)`` says yes: it is called
    with those ``LiveSpan``s and the trace manager's lock held, so that what it counts of
    them and what MLflow sums at the root span's end never overlap. Stubs no longer needed
    (see ``ReleasedSpan``) are dropped on the way.

    Why: MLflow's ``InMemoryTraceManager`` keeps every span object of a trace until its root
    span ends, to assemble the whole trace then: a map of N items held 2N spans. Once the
    store holds a span, MLflow needs it again only to find a parent by id and to sum the
    trace's usage at its end (``take`` counts it instead). Uses ``InMemoryTraceManager
    .get_trace`` and ``_Trace.span_dict`` (mlflow 3.17.2 checked). Public replacement: none
    (MLflow has no setting to release ended spans before the trace ends).
    """
    from mlflow.entities import LiveSpan
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    with InMemoryTraceManager.get_instance().get_trace(trace_id) as trace:
        if trace is None:
            return
        spans = trace.span_dict
        ended = [
            span
            for span_id in span_ids
            if isinstance(span := spans.get(span_id), LiveSpan)
            and span.parent_id is not None
            and span.end_time_ns
        ]
        if not take(ended):
            return
        for span in ended:
            spans[span.span_id] = ReleasedSpan(span)
        _drop_unneeded_stubs(spans)


def _drop_unneeded_stubs(spans: dict[str, Any]) -> None:
    """Keep the stubs a span may still start below (their OpenTelemetry span is alive) and
    the ancestors of those and of the spans not released: a parent is looked up by id, up
    to the root (the LangChain tracer's ``_resolve_parent_span``)."""
    needed: set[str] = set()
    for span_id, span in spans.items():
        if isinstance(span, ReleasedSpan) and not span.is_referenced():
            continue
        while span_id is not None and span_id not in needed and span_id in spans:
            needed.add(span_id)
            span_id = spans[span_id].parent_id
    for span_id in [i for i, s in spans.items() if isinstance(s, ReleasedSpan)]:
        if span_id not in needed:
            del spans[span_id]


def drop_released_spans(trace_id: str, then: Callable[[bool], None]) -> None:
    """Take every ``ReleasedSpan`` of ``trace_id`` out of MLflow's trace manager, and run
    ``then(held)`` with the trace manager's lock still held (``held``: whether it holds the
    trace at all; it does not for a trace MLflow will not export, such as a no-op one).

    Why: when the root span ends, MLflow assembles the trace from what the trace manager
    holds (``_Trace.to_mlflow_trace`` calls each span's ``to_immutable_span``), and sums
    its usage over it: a stub has no content to give. Called just before the root span
    ends, when no span can start below a stub any more. Uses ``InMemoryTraceManager
    .get_trace`` and ``_Trace.span_dict`` (mlflow 3.17.2 checked). Public replacement: none.
    """
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    with InMemoryTraceManager.get_instance().get_trace(trace_id) as trace:
        if trace is not None:
            spans = trace.span_dict
            for span_id in [i for i, s in spans.items() if isinstance(s, ReleasedSpan)]:
                del spans[span_id]
        then(trace is not None)


def trace_info_now(trace_id: str) -> Any | None:
    """A copy of the ``TraceInfo`` MLflow's trace manager holds for an unfinished trace.

    Why: to write the trace's info to the store before its root span ends (span_release
    .py). Uses ``InMemoryTraceManager.get_trace`` (mlflow 3.17.2 checked). Public
    replacement: none (``mlflow.get_trace`` reads the store, which has no info yet).
    """
    import dataclasses

    from mlflow.tracing.trace_manager import InMemoryTraceManager

    with InMemoryTraceManager.get_instance().get_trace(trace_id) as trace:
        if trace is None:
            return None
        info = trace.info
        return dataclasses.replace(
            info,
            trace_metadata=dict(info.trace_metadata),
            tags=dict(info.tags),
            assessments=[],
        )


def span_json_size(span: Any) -> int:
    """The bytes of a span's JSON, as MLflow counts them for a trace's size stats.

    Why: the stats of a trace whose spans were released before it ended (span_release.py)
    must count them too. Uses ``mlflow.tracing.utils.TraceJSONEncoder`` (what
    ``add_size_stats_to_trace_metadata`` uses; not in MLflow's API reference; mlflow 3.17.2
    checked). Public replacement: none.
    """
    from mlflow.tracing.utils import TraceJSONEncoder

    return len(json.dumps(span.to_dict(), cls=TraceJSONEncoder).encode("utf-8"))


def bundled_cost_per_token(
    model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> tuple[float, float] | None:
    """USD of the input and output tokens of ``model`` from MLflow's bundled price table.

    Why: the cost MLflow itself puts on spans, without a network call on the run's path.
    Uses ``mlflow.utils.providers.cost_per_token`` (not in MLflow's API reference); with no
    provider hint it scans only the bundled catalog. Public replacement: none (MLflow prices
    spans itself, but not a lone usage).
    """
    from mlflow.utils.providers import cost_per_token

    return cost_per_token(
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cache_read_input_tokens=cached_tokens,
    )


def bundled_catalog_files() -> tuple[Path, ...]:
    """MLflow's bundled model catalog files (one JSON per provider), in name order, found
    without importing mlflow.

    Why: a definition-time estimate prices calls as ``bundled_cost_per_token`` does, and
    importing mlflow would add about 2.5 s to every code-location load. The files are
    ``mlflow/utils/model_catalog/*.json``, each ``{"models": {name: {"pricing": ...}}}``.
    Public replacement: none.
    """
    spec = importlib.util.find_spec("mlflow")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(next(iter(spec.submodule_search_locations))) / "utils" / "model_catalog"
    return tuple(sorted(folder.glob("*.json"), key=lambda path: path.stem))


def span_totals(spans: Iterable[Any]) -> tuple[dict[str, int], dict[str, float]]:
    """Token usage and cost summed over ``spans`` (MLflow's own sums): the stored spans of a
    trace that may never have ended.

    Why: a run killed mid-way leaves a partial trace with no trace-level usage. Uses
    ``mlflow.tracing.utils.aggregate_usage_from_spans`` and ``aggregate_cost_from_spans``.
    Public replacement: ``TraceInfo.token_usage``, for a trace that ended.
    """
    from mlflow.tracing.utils import aggregate_cost_from_spans, aggregate_usage_from_spans

    listed = list(spans)
    return aggregate_usage_from_spans(listed) or {}, aggregate_cost_from_spans(listed) or {}


def hard_delete_run(tracking_uri: str, run_id: str, artifact_uri: str) -> bool:
    """Delete a soft-deleted run for good, its artifacts first, as ``mlflow gc --run-ids``
    does; False (and nothing done) if the store cannot hard-delete runs (a tracking server:
    its operator runs ``mlflow gc`` there).

    Why: retention must remove a run, not hide it; MLflow's client only soft-deletes.
    Uses ``mlflow.tracking._get_store`` and the store's ``_hard_delete_run`` (what
    ``mlflow.cli.gc`` calls), and ``mlflow.store.artifact.artifact_repository_registry
    .get_artifact_repository(...).delete_artifacts()`` (not in MLflow's API reference).
    Public replacement: none; the ``mlflow gc`` command line, run by hand.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import _get_store

    store = _get_store(tracking_uri)
    if not hasattr(store, "_hard_delete_run"):
        return False
    get_artifact_repository(artifact_uri).delete_artifacts()
    store._hard_delete_run(run_id)
    return True
