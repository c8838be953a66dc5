"""Compile a WorkflowSpec into a LangGraph graph."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from langgraph.graph import END as LG_END
from langgraph.graph import START as LG_START
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from agents_pipelines.graph.nodes import make_node
from agents_pipelines.graph.routes import router
from agents_pipelines.graph.state import state_schema
from agents_pipelines.llm.backend import ChatModelFactory
from agents_pipelines.llm.gemini import wait_for_retry_after
from agents_pipelines.spec.models import END, START, LlmConfig, WorkflowSpec

# Compiled graphs, newest last: (spec, models) -> graph. A compiled graph holds no run
# state, so runs and threads share it; compiling costs about 9 ms per run of a 3-node
# workflow (measured), a fifth of the whole overhead budget. Entries hold the spec and
# the models, so the ids in a key cannot be reused while the entry lives.
_compiled: OrderedDict[tuple[int, ...], tuple[WorkflowSpec, tuple[Any, ...], Any]] = OrderedDict()
_compiled_lock = threading.Lock()
_MAX_COMPILED = 256


def build_graph(spec: WorkflowSpec, model_factory: ChatModelFactory) -> CompiledStateGraph:
    """The compiled graph of ``spec`` with the models ``model_factory`` gives its nodes.

    Reused while the spec object and the models are the same (the factories share models
    between runs); a changed file is a new spec, a rotated key a new model.
    """
    models = tuple(
        model_factory(spec.config.llm.merged(node.llm)) if node.calls_llm else None
        for node in spec.nodes
    )
    key = (id(spec), *map(id, models))
    with _compiled_lock:
        if (entry := _compiled.get(key)) is not None:
            _compiled.move_to_end(key)
            return entry[2]
    graph = _compile(spec, models)
    with _compiled_lock:
        _compiled[key] = (spec, models, graph)
        while len(_compiled) > _MAX_COMPILED:
            _compiled.popitem(last=False)
    return graph


def _compile(spec: WorkflowSpec, models: tuple[Any, ...]) -> CompiledStateGraph:
    graph: StateGraph[Any] = StateGraph(state_schema(spec))
    for node, model in zip(spec.nodes, models, strict=True):
        llm = spec.config.llm.merged(node.llm)
        action: Any = make_node(spec, node, model)
        graph.add_node(
            node.id,
            action,
            retry_policy=retry_policy(llm),
        )
    for edge in spec.edges:
        if edge.routes is not None:
            targets = {_name(route.to) for route in edge.routes}
            graph.add_conditional_edges(
                _name(edge.sources[0]), router(edge.routes), {t: t for t in targets}
            )
        elif isinstance(edge.source, list):
            graph.add_edge(edge.source, _name(edge.to or END))
        else:
            graph.add_edge(_name(edge.source), _name(edge.to or END))
    return graph.compile(name=spec.flow.name)


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


def _name(node: str) -> str:
    return {START: LG_START, END: LG_END}.get(node, node)
