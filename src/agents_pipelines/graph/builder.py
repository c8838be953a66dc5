"""Compile a WorkflowSpec into a LangGraph graph."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END as LG_END
from langgraph.graph import START as LG_START
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

from agents_pipelines._compat.langgraph import stream_only
from agents_pipelines.graph import map_node, node_spend
from agents_pipelines.graph.nodes import make_async_node, make_node
from agents_pipelines.graph.routes import router, target
from agents_pipelines.graph.state import state_schema
from agents_pipelines.llm.backend import ChatModelFactory
from agents_pipelines.llm.cache import ResponseCache, cached_model
from agents_pipelines.llm.gemini import is_transient, retry_after_s, wait_for_retry_after
from agents_pipelines.registry import ProcessRegistry, process_registry
from agents_pipelines.spec.models import END, START, LlmConfig, Node, WorkflowSpec

# Compiled graphs kept (newest last, in the registry's compiled_graphs): a compiled graph
# holds no run state, so runs and threads share it; compiling costs about 9 ms per run of
# a 3-node workflow (measured), a fifth of the whole overhead budget.
_MAX_COMPILED = 256


def build_graph(
    spec: WorkflowSpec,
    model_factory: ChatModelFactory,
    cache: ResponseCache | None = None,
    registry: ProcessRegistry | None = None,
) -> CompiledStateGraph:
    """The compiled graph of ``spec`` with the models ``model_factory`` gives its nodes,
    those of nodes that do not say ``cache: false`` answering from ``cache`` first.

    Reused (kept in ``registry``, by default the process's) while the spec object and the
    models are the same (the factories share models between runs); a changed file is a
    new spec, a rotated key a new model.
    """
    registry = registry or process_registry()
    models = tuple(_model(spec, node, model_factory, cache, registry) for node in spec.nodes)
    key = (id(spec), *map(id, models))
    compiled = registry.compiled_graphs
    with registry.graphs_lock:
        if (entry := compiled.get(key)) is not None:
            compiled.move_to_end(key)
            return entry[2]
    graph = _compile(spec, models)
    with registry.graphs_lock:
        compiled[key] = (spec, models, graph)
        while len(compiled) > _MAX_COMPILED:
            compiled.popitem(last=False)
    return graph


def _model(
    spec: WorkflowSpec,
    node: Node,
    factory: ChatModelFactory,
    cache: ResponseCache | None,
    registry: ProcessRegistry,
) -> Any:
    if not node.calls_llm:
        return None
    model = factory(spec.config.llm.merged(node.llm))
    return cached_model(model, cache, registry) if cache is not None and node.cache else model


def _compile(spec: WorkflowSpec, models: tuple[Any, ...]) -> CompiledStateGraph:
    public = state_schema(spec)
    private = {**map_node.results_channels(spec), **node_spend.channels()}
    state: Any = TypedDict(  # type: ignore[misc]
        f"{spec.flow.name}_run_state", {**public.__annotations__, **private}
    )
    graph: StateGraph[Any] = StateGraph(state, input_schema=public, output_schema=public)
    on_event_loop = map_node.has_map(spec)
    for node, model in zip(spec.nodes, models, strict=True):
        policy = retry_policy(spec.config.llm.merged(node.llm))
        if node.map is not None:
            per_item = functools.partial(make_async_node, node=node, model=model)
            map_node.add_map_node(graph, spec, node, per_item, policy)
        elif map_node.is_batch(spec, node):
            # Awaited on the event loop: a stop cancels the task, and the task its job.
            batched: Any = node_spend.accounted_async(make_async_node(spec, node, model), node.id)
            graph.add_node(node.id, batched, retry_policy=policy._replace(retry_on=is_transient))
        else:
            action: Any = node_spend.accounted(make_node(spec, node, model), node.id)
            if on_event_loop:  # retry_on runs on the event loop: it must not sleep there
                action = _waits_for_retry_after(action, policy)
                policy = policy._replace(retry_on=is_transient)
            graph.add_node(node.id, action, retry_policy=policy)
    # Edges leave a map node from its own id (where its outputs are written) and enter it
    # at its fan-out (map_node.entry).
    entries = {node.id: map_node.entry(node) for node in spec.nodes}
    for edge in spec.edges:
        if edge.routes is not None:
            # The router answers a route's `to`; the path map turns it into the node to run.
            paths: dict[Hashable, str] = {
                target(r.to): _name(entries.get(r.to, r.to)) for r in edge.routes
            }
            graph.add_conditional_edges(_name(edge.sources[0]), router(edge.routes), paths)
        else:
            to = _name(entries.get(edge.to or END, edge.to or END))
            graph.add_edge(edge.source if isinstance(edge.source, list) else _name(edge.source), to)
    # Stream the workflow's state only, not the private channels.
    compiled = graph.compile(name=spec.flow.name)
    compiled = stream_only(compiled, list(public.__annotations__))
    if not on_event_loop:
        return compiled
    # Enough tasks at once for every map node's max_concurrency.
    return compiled.with_config(max_concurrency=map_node.tasks_needed(spec))


def retry_policy(llm: LlmConfig) -> RetryPolicy:
    """Retries of transient LLM failures only; a 400 or a bad key fails at once."""
    return RetryPolicy(
        max_attempts=llm.max_retries + 1,
        initial_interval=1.0,
        backoff_factor=2.0,
        max_interval=30.0,
        jitter=True,
        retry_on=wait_for_retry_after,
    )


def _waits_for_retry_after(
    action: Callable[[dict[str, Any], RunnableConfig], dict[str, Any]], policy: RetryPolicy
) -> Callable[..., dict[str, Any]]:
    """A sync node of a graph run on the event loop: it waits for the server's Retry-After
    itself, on its worker thread, before it raises an error that LangGraph will retry."""

    def run(state: dict[str, Any], config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        try:
            return action(state, config)
        except Exception as exc:
            attempt = runtime.execution_info.node_attempt if runtime.execution_info else 1
            if attempt < policy.max_attempts and is_transient(exc):
                time.sleep(retry_after_s(exc) or 0.0)
            raise

    return run


def _name(node: str) -> str:
    return {START: LG_START, END: LG_END}.get(node, node)
