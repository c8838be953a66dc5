"""Rules on the Python a workflow names: ``function`` steps and ``tools``.

Each reference is resolved here, at load (its module imported in a child process, see
spec/ref_probe.py), so that a typo or a broken module fails the code location (or is
skipped, with AGENTS_PIPELINES_INVALID_WORKFLOWS=skip) with file:line, rather than the
first run that reaches the node.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

from agents_pipelines.redaction import redact
from agents_pipelines.spec.findings import Finding, Hint, Path
from agents_pipelines.spec.models import Node, WorkflowSpec
from agents_pipelines.spec.python_objects import ObjectInfo
from agents_pipelines.spec.python_refs import RefError, split_ref
from agents_pipelines.spec.ref_probe import describe_ref, probing

_BAD_KINDS = {
    "VAR_POSITIONAL": "*args",
    "VAR_KEYWORD": "**kwargs",
    "POSITIONAL_ONLY": "a positional-only parameter",
}


def python_refs(spec: WorkflowSpec) -> Iterator[Finding]:
    with probing():  # one child process imports the modules of every node
        for i, node in enumerate(spec.nodes):
            path: Path = ("nodes", i)
            if node.function is not None:
                yield from _function(spec, node, (*path, "function"))
            yield from _tools(node, path)
            if "max_tool_calls" in node.model_fields_set and not node.tools:
                yield (
                    (*path, "max_tool_calls"),
                    "`max_tool_calls` only applies to a node with `tools`",
                    "drop `max_tool_calls`, or give the node `tools: [module:function, ...]`",
                )
            if node.timeout_s is not None and node.function is None and not node.tools:
                yield (
                    (*path, "timeout_s"),
                    "`timeout_s` limits a Python step or a tool call, and this node has neither",
                    "drop `timeout_s`; an LLM call's limit is `llm: {timeout_s: ...}`",
                )


def _described(ref: str, path: Path) -> tuple[ObjectInfo | None, Finding | None]:
    try:
        return describe_ref(ref), None
    except RefError as exc:
        return None, (path, f"cannot import `{ref}`: {redact(str(exc))}", _import_fix(ref, exc))


def _import_fix(ref: str, error: RefError) -> str:
    if error.module_failed:
        module = split_ref(ref)[0]
        return (
            f"make `{module}` import cleanly: a step or tool module must not exit or raise "
            f'as it imports (`python -c "import {module}"` in {os.getcwd()} shows how it fails)'
        )
    return (
        "check the `module:name` spelling; the module must be importable from the "
        f"directory the code location runs in ({os.getcwd()}) or be installed"
    )


def _function(spec: WorkflowSpec, node: Node, path: Path) -> Iterator[Finding]:
    assert node.function is not None
    target, failed = _described(node.function, path)
    if failed is not None:
        yield failed
        return
    assert target is not None
    if not target.is_callable:
        yield (
            path,
            f"`{node.function}` is {target.type_name}, not a function",
            "name a function (`def` or `async def`) that takes state fields as keyword "
            "arguments and returns a dict of the node's outputs",
        )
        return
    fields = list(spec.state.fields)
    item = [node.map.as_] if node.map is not None else []
    for parameter in target.parameters:
        if parameter.kind in _BAD_KINDS:
            yield (
                path,
                f"`{node.function}` takes {_BAD_KINDS[parameter.kind]} (`{parameter.name}`)",
                "give it one keyword parameter per state field it reads",
            )
        elif parameter.name not in (*fields, *item) and not parameter.has_default:
            yield (
                path,
                f"parameter `{parameter.name}` of `{node.function}` is not a state field",
                Hint(
                    parameter.name,
                    fields + item,
                    "state fields",
                    " (each parameter receives the state field of its name; give any "
                    "other a default)",
                ),
            )


def _tools(node: Node, path: Path) -> Iterator[Finding]:
    """Each tool, and their names: Gemini calls a tool by name, so two tools of one name
    would leave the model one of them (the later one replaced the earlier at run time)."""
    named: dict[str, tuple[int, str]] = {}
    for j, ref in enumerate(node.tools):
        target = yield from _tool(ref, (*path, "tools", j))
        if target is None or target.tool_name is None:
            continue
        first = named.setdefault(target.tool_name, (j, ref))
        if first[0] != j:
            yield _same_name((*path, "tools", j), ref, target.tool_name, *first)


def _same_name(path: Path, ref: str, name: str, first_index: int, first_ref: str) -> Finding:
    if ref == first_ref:
        return path, f"`{ref}` is listed twice (also tools[{first_index}])", "drop this one"
    return (
        path,
        f"tool `{ref}` is named `{name}`, as is `{first_ref}` (tools[{first_index}]): Gemini "
        "calls tools by name, so the model could reach only one of them",
        "keep one of them, or rename one (the function, or a LangChain tool's `name`)",
    )


def _tool(ref: str, path: Path) -> Generator[Finding, None, ObjectInfo | None]:
    """The tool's findings; returns what it names when that is a function or a tool."""
    target, failed = _described(ref, path)
    if failed is not None:
        yield failed
        return None
    assert target is not None
    if target.is_langchain_tool:
        return target
    if not target.is_function:
        yield (
            path,
            f"`{ref}` is {target.type_name}, not a function or a LangChain tool",
            "name a typed function with a docstring, or a langchain_core BaseTool",
        )
        return None
    untyped = [p.name for p in target.parameters if not p.annotated]
    if untyped:
        yield (
            path,
            f"tool `{ref}` has no type for parameter(s) {', '.join(untyped)}",
            "annotate every parameter (e.g. `order_id: str`): Gemini is sent their types",
        )
    if not target.has_doc:
        yield (
            path,
            f"tool `{ref}` has no docstring",
            "add a docstring that says what the tool does: Gemini reads it to decide when "
            "to call the tool",
        )
    return target
