"""Rules on the Python a workflow names: ``function`` steps and ``tools``.

Each reference is imported here, at load, so that a typo or a broken module fails the
code location (or is skipped, with AGENTS_PIPELINES_INVALID_WORKFLOWS=skip) with file:line,
rather than the first run that reaches the node.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator

from agents_pipelines.redaction import redact
from agents_pipelines.spec.findings import Finding, Hint, Path
from agents_pipelines.spec.models import Node, WorkflowSpec
from agents_pipelines.spec.python_refs import RefError, import_ref

_BAD_KINDS = {
    inspect.Parameter.VAR_POSITIONAL: "*args",
    inspect.Parameter.VAR_KEYWORD: "**kwargs",
    inspect.Parameter.POSITIONAL_ONLY: "a positional-only parameter",
}


def python_refs(spec: WorkflowSpec) -> Iterator[Finding]:
    for i, node in enumerate(spec.nodes):
        path: Path = ("nodes", i)
        if node.function is not None:
            yield from _function(spec, node, (*path, "function"))
        for j, ref in enumerate(node.tools):
            yield from _tool(ref, (*path, "tools", j))
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


def _imported(ref: str, path: Path) -> tuple[object | None, Finding | None]:
    try:
        return import_ref(ref), None
    except RefError as exc:
        return None, (
            path,
            f"cannot import `{ref}`: {redact(str(exc))}",
            "check the `module:name` spelling; the module must be importable from the "
            f"directory the code location runs in ({os.getcwd()}) or be installed",
        )


def _function(spec: WorkflowSpec, node: Node, path: Path) -> Iterator[Finding]:
    assert node.function is not None
    target, failed = _imported(node.function, path)
    if failed is not None:
        yield failed
        return
    if not callable(target):
        yield (
            path,
            f"`{node.function}` is {type(target).__name__}, not a function",
            "name a function (`def` or `async def`) that takes state fields as keyword "
            "arguments and returns a dict of the node's outputs",
        )
        return
    fields = list(spec.state.fields)
    item = [node.map.as_] if node.map is not None else []
    for parameter in _parameters(target):
        if parameter.kind in _BAD_KINDS:
            yield (
                path,
                f"`{node.function}` takes {_BAD_KINDS[parameter.kind]} (`{parameter.name}`)",
                "give it one keyword parameter per state field it reads",
            )
        elif parameter.name not in (*fields, *item) and parameter.default is parameter.empty:
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


def _tool(ref: str, path: Path) -> Iterator[Finding]:
    target, failed = _imported(ref, path)
    if failed is not None:
        yield failed
        return
    if _is_langchain_tool(target):
        return
    if not inspect.isfunction(target) and not inspect.iscoroutinefunction(target):
        yield (
            path,
            f"`{ref}` is {type(target).__name__}, not a function or a LangChain tool",
            "name a typed function with a docstring, or a langchain_core BaseTool",
        )
        return
    untyped = [p.name for p in _parameters(target) if p.annotation is p.empty]
    if untyped:
        yield (
            path,
            f"tool `{ref}` has no type for parameter(s) {', '.join(untyped)}",
            "annotate every parameter (e.g. `order_id: str`): Gemini is sent their types",
        )
    if not inspect.getdoc(target):
        yield (
            path,
            f"tool `{ref}` has no docstring",
            "add a docstring that says what the tool does: Gemini reads it to decide when "
            "to call the tool",
        )


def _parameters(target: Callable[..., object]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return []


def _is_langchain_tool(target: object) -> bool:
    """A BaseTool, checked by name so that workflows without tools never import langchain."""
    return any(
        cls.__name__ == "BaseTool" and cls.__module__.startswith("langchain_core.tools")
        for cls in type(target).__mro__
    )
