"""Rules on map nodes (``nodes[].map``): the list they run over, the item placeholder, and
the list fields they write, one element per item."""

from __future__ import annotations

from collections.abc import Iterator

from agents_pipelines.spec.findings import Finding, Hint
from agents_pipelines.spec.models import Node, WorkflowSpec
from agents_pipelines.spec.placeholders import PlaceholderError, parse_template


def map_nodes(spec: WorkflowSpec) -> Iterator[Finding]:
    fields = spec.state.fields
    for i, node in enumerate(spec.nodes):
        if node.map is None:
            continue
        path = ("nodes", i, "map")
        over = fields.get(node.map.over)
        if over is None:
            yield (
                (*path, "over"),
                f"map.over names no state field (`{node.map.over}`)",
                Hint(node.map.over, [n for n, f in fields.items() if _is_list(f.type)], "lists"),
            )
        elif not _is_list(over.type):
            yield (
                (*path, "over"),
                f"map.over must name a list field; `{node.map.over}` is {over.type}",
                f'name a list[...] field, or declare `{node.map.over}` as "list[{over.type}]"'
                if over.type in ("str", "int", "float", "bool")
                else "name a list[...] field",
            )
        if node.map.as_ in fields:
            yield (
                (*path, "as"),
                f"map.as `{node.map.as_}` is also a state field, so {{{node.map.as_}}} would "
                "be ambiguous in the prompt",
                f"name the item something no field is called, e.g. `as: {_singular(node)}`",
            )
        for j, output in enumerate(node.outputs):
            field = fields.get(output)
            if field is not None and not _is_list(field.type):
                yield (
                    ("nodes", i, "outputs", j),
                    f"a map node writes one element per item, so output `{output}` must be "
                    f"a list field; it is {field.type}",
                    f'declare `{output}` as "list[{field.type}]"'
                    if field.type in ("str", "int", "float", "bool")
                    else "write a list[...] field, or drop `map`",
                )
    yield from _items_outside_their_map(spec)


def item_placeholders(spec: WorkflowSpec) -> set[str]:
    """Every map node's ``as`` name: a placeholder, not a state field."""
    return {node.map.as_ for node in spec.nodes if node.map is not None}


def _items_outside_their_map(spec: WorkflowSpec) -> Iterator[Finding]:
    """``{review}`` in a node that does not map ``as: review`` (state_rules leaves it here)."""
    owners = {node.map.as_: node.id for node in spec.nodes if node.map is not None}
    for i, node in enumerate(spec.nodes):
        own = node.map.as_ if node.map is not None else None
        for key in ("prompt", "system"):
            text = getattr(node, key)
            if not isinstance(text, str):  # none, or in the registry (spec.prompt_refs)
                continue
            try:
                names = parse_template(text).fields
            except PlaceholderError:
                continue  # reported by state_rules.prompt_placeholders
            for name in names:
                if name in owners and name != own and name not in spec.state.fields:
                    yield (
                        ("nodes", i, key),
                        f"placeholder {{{name}}} is the item of map node `{owners[name]}`, "
                        f"and node `{node.id}` has no `map: {{as: {name}}}`",
                        f"use {{{name}}} only in `{owners[name]}`; here, name a state field, "
                        f"such as the list `{owners[name]}` writes",
                    )


def _is_list(type_name: str) -> bool:
    return type_name.startswith("list[")


def _singular(node: Node) -> str:
    over = node.map.over if node.map is not None else node.id
    return (over[:-1] if over.endswith("s") and len(over) > 1 else over) + "_item"
