"""WorkflowSpec → LangGraph graph, and the run state it carries."""

from agents_pipelines.graph.builder import build_graph
from agents_pipelines.graph.mermaid import draw_mermaid
from agents_pipelines.graph.state import initial_state

__all__ = ["build_graph", "draw_mermaid", "initial_state"]
