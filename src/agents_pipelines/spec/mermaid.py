"""A Mermaid drawing of a workflow, made from the spec (no LangGraph import needed)."""

from __future__ import annotations

from agents_pipelines.spec.models import END, START, Condition, Node, WorkflowSpec


def draw_mermaid(spec: WorkflowSpec) -> str:
    lines = ["flowchart TD", f"  {START}([START])", f"  {END}([END])"]
    lines += [f"  {_box(node)}" for node in spec.nodes]
    for edge in spec.edges:
        for source in edge.sources:
            if edge.routes is None:
                lines.append(f"  {source} --> {edge.to}")
                continue
            for route in edge.routes:
                label = _label(route.when) if route.when else "otherwise"
                lines.append(f'  {source} -.->|"{label}"| {route.to}')
    return "\n".join(lines) + "\n"


def _box(node: Node) -> str:
    if node.map is None:
        return f"{node.id}[{node.id}]"
    # A subroutine box: the node runs once per item.
    return f'{node.id}[["{node.id}: each {node.map.as_} of {node.map.over}"]]'


def _label(condition: Condition) -> str:
    ((operator, value),) = condition.operators().items()
    return f"{condition.field} {operator} {value}".replace('"', "'")
