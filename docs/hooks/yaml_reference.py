"""The YAML reference page, generated from schema/workflow.schema.json at every docs build.

The schema is the one `agents-pipelines schema` prints and editors read (through the
`yaml-language-server` line), so the reference and the editor's hover text are the same words
and cannot drift from the models. Every key must carry a description, or be named in backticks
by its parent's: a key with neither fails the build (and tests/test_yaml_reference.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "workflow.schema.json"
PAGE = "reference/yaml.md"
NO_DEFAULT = object()
SECTIONS = {
    "schema_version": "The file: `schema_version`, `flow`",
    "flow": "The file: `schema_version`, `flow`",
    "state": "State: `state`",
    "nodes": "Nodes: `nodes`",
    "edges": "Edges: `edges`",
    "config": "Run settings: `config`",
    "orchestration": "Dagster: `orchestration`",
    "evals": "Tests of the final state: `evals`",
}


@dataclass(frozen=True)
class Key:
    path: str  # `nodes[].llm.model`; a name the user chooses is `NAME`
    type: str
    default: Any  # NO_DEFAULT when the key has none
    description: str
    leaf: bool


def schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA.read_text()))


def all_keys(root: dict[str, Any] | None = None) -> list[Key]:
    """Every key of the schema, parents before their children, in the models' order."""
    root = root or schema()
    return list(_walk(root, root, "", NO_DEFAULT, ""))


def leaf_keys(root: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every leaf key path, with its default (or NO_DEFAULT)."""
    return {key.path: key.default for key in all_keys(root) if key.leaf}


def _walk(
    root: dict[str, Any], node: dict[str, Any], path: str, default: Any, description: str
) -> Iterator[Key]:
    resolved = _resolve(root, node)
    children = _children(root, resolved)
    # `nodes[]` and `state.fields.NAME` are containers: their keys are listed, not them.
    if path and not path.endswith(("[]", ".NAME")):
        parts = [description, _object_doc(root, node)] if children else [description]
        text = " ".join(dict.fromkeys(part for part in parts if part))
        yield Key(path, _type(root, node), default, " ".join(text.split()), not children)
    for name, child, child_default in children:
        yield from _walk(root, child, name(path), child_default, child.get("description", ""))


def _children(root: dict[str, Any], node: dict[str, Any]) -> list[tuple[Any, Any, Any]]:
    if "anyOf" in node:
        for branch in node["anyOf"]:
            if branch.get("type") != "null" and _has_keys(root, branch):
                return _children(root, _resolve(root, branch))
        return []
    if node.get("properties"):
        return [
            (
                lambda path, n=name: f"{path}.{n}" if path else n,
                child,
                child.get("default", NO_DEFAULT),
            )
            for name, child in node["properties"].items()
        ]
    values = _map_values(node)
    if _has_keys(root, values):
        return [(lambda path: f"{path}.NAME", values, NO_DEFAULT)]
    if node.get("type") == "array" and _has_keys(root, node["items"]):
        return [(lambda path: f"{path}[]", node["items"], NO_DEFAULT)]
    return []


def _object_doc(root: dict[str, Any], node: dict[str, Any]) -> str:
    """The description of the object a key holds (its model's docstring), through lists,
    mappings and optional values."""
    if "$ref" in node:
        return str(root["$defs"][node["$ref"].split("/")[-1]].get("description", ""))
    for branch in node.get("anyOf", []):
        if branch.get("type") != "null" and (doc := _object_doc(root, branch)):
            return doc
    if node.get("type") == "array":
        return _object_doc(root, node.get("items", {}))
    values = _map_values(node)
    return _object_doc(root, values) if values else ""


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return {**root["$defs"][node["$ref"].split("/")[-1]], **_without(node, "$ref")}
    return node


def _without(node: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != key}


def _map_values(node: dict[str, Any]) -> dict[str, Any]:
    """The schema of a mapping's values (`state.fields`, `config.pricing`), else {}."""
    patterns = list(node.get("patternProperties", {}).values())
    extra = node.get("additionalProperties")
    return patterns[0] if patterns else extra if isinstance(extra, dict) else {}


def _has_keys(root: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether values of this schema are objects with named keys of their own."""
    node = _resolve(root, node)
    if "anyOf" in node:
        return any(_has_keys(root, branch) for branch in node["anyOf"])
    if not node:
        return False
    if node.get("type") == "array":
        return _has_keys(root, node.get("items", {}))
    return bool(node.get("properties")) or _has_keys(root, _map_values(node))


def _type(root: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(root, node)
    if "anyOf" in node:
        kinds = [_type(root, b) for b in node["anyOf"] if b.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    kind = node.get("type", "object" if node.get("properties") else "any")
    if kind == "array":
        return f"list of {_type(root, node.get('items', {}))}"
    if kind == "object" and not node.get("properties") and _map_values(node):
        return f"map of {_type(root, _map_values(node))}"
    limits = [
        f"{sign} {node[bound]:,}" if isinstance(node[bound], int) else f"{sign} {node[bound]}"
        for bound, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"))
        if bound in node
    ]
    return kind + (f" ({', '.join(limits)})" if limits else "")


def undocumented(keys: list[Key]) -> list[str]:
    """Keys with no description of their own that no ancestor's description names."""
    described = {key.path: key.description for key in keys}
    missing = []
    for key in keys:
        if key.description or not key.leaf:
            continue
        name = key.path.rsplit(".", 1)[-1].removesuffix("[]")
        ancestors = [p for p in described if key.path.startswith((f"{p}.", f"{p}[]"))]
        if not any(f"`{name}`" in described[p] for p in ancestors):
            missing.append(key.path)
    return missing


def render(root: dict[str, Any] | None = None) -> str:
    every_key = all_keys(root)
    missing = undocumented(every_key)
    if missing:
        raise ValueError(
            "schema/workflow.schema.json: these keys have no description, and their parent's "
            f"description does not name them: {', '.join(missing)}. Add a `description=` to "
            "the field in src/agents_pipelines/spec/models.py and run "
            "`agents-pipelines schema > schema/workflow.schema.json`."
        )
    out = [
        "# YAML reference",
        "",
        "Every key of a workflow file, generated from `schema/workflow.schema.json` (the schema",
        "`agents-pipelines schema` prints and your editor reads). `NAME` stands for a name you",
        'choose. A key with no default is required, or means "not set" when left out.',
    ]
    section = None
    for key in every_key:
        top = key.path.split(".")[0].removesuffix("[]")
        if SECTIONS[top] != section:
            section = SECTIONS[top]
            out += [
                "",
                f"## {section}",
                "",
                "| key | type | default | meaning |",
                "| --- | --- | --- | --- |",
            ]
        out.append(
            f"| `{key.path}` | {key.type} | {_default(key.default) if key.leaf else ''} | "
            f"{_cell(key.description)} |"
        )
    return "\n".join(out) + "\n"


def _default(value: Any) -> str:
    if value is NO_DEFAULT or value in (None, "", [], {}):
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value:,}`" if isinstance(value, int) else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


DOCS = Path(__file__).resolve().parents[1]
REGENERATE = ".venv/bin/python docs/hooks/yaml_reference.py"


def stale() -> str | None:
    """Why the committed page differs from what the schema gives, or None when it does not."""
    page = DOCS / PAGE
    if not page.exists():
        return f"docs/{PAGE} is missing"
    if page.read_text() != render():
        return f"docs/{PAGE} does not match schema/workflow.schema.json"
    return None


def on_pre_build(config: Any) -> None:
    """mkdocs hook: the build fails while the committed page lags the schema (the page is
    committed so that it reads on GitHub too)."""
    from mkdocs.exceptions import PluginError

    if problem := stale():
        raise PluginError(f"{problem}: run `{REGENERATE}` and commit the page.")


if __name__ == "__main__":
    (DOCS / PAGE).parent.mkdir(exist_ok=True)
    (DOCS / PAGE).write_text(render())
    print(f"wrote docs/{PAGE}")
