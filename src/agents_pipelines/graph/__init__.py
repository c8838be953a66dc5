"""WorkflowSpec → LangGraph graph, and the run state it carries."""

from agents_pipelines.graph.builder import build_graph
from agents_pipelines.graph.state import initial_state

__all__ = ["build_graph", "initial_state"]
