"""One LangGraph node per workflow node: render the prompt, call the model, write outputs.

A node with ``tools`` loops through tool calls first (tool_loop.py); a node with
``function`` is a Python step (python_step.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import ValidationError

from agents_pipelines.errors import OutputValidationError
from agents_pipelines.graph.dry_run import dry_run_hints
from agents_pipelines.graph.python_step import python_step
from agents_pipelines.graph.state import output_model
from agents_pipelines.graph.tool_loop import tool_node
from agents_pipelines.llm.simulated import SimulatedChatModel
from agents_pipelines.spec.models import Node, WorkflowSpec
from agents_pipelines.spec.placeholders import parse_template

NodeFunction = Callable[[dict[str, Any]], dict[str, Any]]


def make_node(spec: WorkflowSpec, node: Node, model: BaseChatModel | None) -> NodeFunction:
    """The action of one node: state in, the node's outputs out."""
    if node.function is not None:
        return python_step(spec, node)
    assert model is not None  # an LLM node always has its model (graph.builder)
    return _prompt_node(spec, node, model)


def _prompt_node(spec: WorkflowSpec, node: Node, model: BaseChatModel) -> NodeFunction:
    """A single ``str`` output is a plain text call; anything else is one structured call,
    a single ``str`` with choices included (its enum holds the reply to a label)."""
    assert node.prompt is not None
    prompt = parse_template(node.prompt)
    system = parse_template(node.system) if node.system else None

    def messages(state: dict[str, Any]) -> list[BaseMessage]:
        human = HumanMessage(prompt.render(state))
        return [SystemMessage(system.render(state)), human] if system else [human]

    (first,) = node.outputs[:1]
    hints = _simulation_hints(spec, node, model)
    if len(node.outputs) == 1 and _is_free_text(spec, first):
        if node.tools:
            return tool_node(spec, node, model, messages, None)

        def text_node(state: dict[str, Any]) -> dict[str, Any]:
            return {first: model.invoke(messages(state), **hints).text}

        return text_node

    schema = output_model(spec, node.outputs, f"{spec.flow.name}__{node.id}__output")
    # Gemini's JSON mode, as ChatGoogleGenerativeAI.with_structured_output binds it; calling
    # the model directly keeps the trace to one span per LLM call, and we validate ourselves.
    json_mode: dict[str, Any] = {
        "response_mime_type": "application/json",
        "response_json_schema": schema.model_json_schema(),
        "ls_structured_output_format": {
            "kwargs": {"method": "json_schema"},
            "schema": schema.model_json_schema(),
        },
    }

    def structured_call(conversation: list[BaseMessage]) -> dict[str, Any]:
        reply = model.invoke(conversation, **json_mode, **hints).text
        try:
            parsed = schema.model_validate_json(strip_fence(reply))
        except ValidationError as exc:
            raise OutputValidationError(
                f"Node `{node.id}` of workflow {spec.flow.name}: the model's structured reply "
                f"does not fit the output fields {node.outputs} ({_reason(exc)}). Fix: describe "
                "the expected values in the prompt or in the state fields' descriptions, or "
                + _loosen(exc)
            ) from None
        return {out: getattr(parsed, out) for out in node.outputs}

    if node.tools:
        return tool_node(spec, node, model, messages, structured_call)
    return lambda state: structured_call(messages(state))


def _is_free_text(spec: WorkflowSpec, field: str) -> bool:
    return spec.state.fields[field].type == "str" and not spec.state.fields[field].choices


def _simulation_hints(spec: WorkflowSpec, node: Node, model: BaseChatModel) -> dict[str, Any]:
    """The checks' bounds and the route values of the node's outputs, for the simulated model
    only, so that a dry run passes a `max: 5` check and takes a `gte: 8` route both ways.

    Gemini's request stays as it is: sent in its schema, the bounds would hold Gemini to
    them, so a non-blocking check (a warning) could never fail; put in the output model, a
    reply outside them would fail the run as a validation error instead of failing the check.
    """
    if not isinstance(model, SimulatedChatModel):
        return {}
    hints = dry_run_hints(spec, node.outputs)
    return {"value_hints": hints} if hints else {}


def strip_fence(text: str) -> str:
    """Some models wrap JSON in a markdown fence even in JSON mode."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[-1].rsplit("```", 1)[0]
    return text


def _reason(error: ValidationError) -> str:
    first = error.errors(include_url=False)[:3]
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {_message(e)}" for e in first)


def _loosen(error: ValidationError) -> str:
    if any(e["type"] == "literal_error" for e in error.errors()):
        return "add the value to the field's `choices` if it is a label you want."
    return "loosen the field types."


def _message(error: Any) -> str:
    """A value outside a field's choices is named, so the log shows what the model said."""
    if error["type"] == "literal_error":
        return f"{error['msg']}, not {error['input']!r:.60}"
    return str(error["msg"])
