"""Compile a WorkflowSpec into a LangGraph graph."""

from __future__ import annotations

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


def build_graph(spec: WorkflowSpec, model_factory: ChatModelFactory) -> CompiledStateGraph:
    graph: StateGraph[Any] = StateGraph(state_schema(spec))
    for node in spec.nodes:
        llm = spec.config.llm.merged(node.llm)
        action: Any = make_node(spec, node, model_factory(llm))
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
