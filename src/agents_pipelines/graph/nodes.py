"""One LangGraph node per workflow node: render the prompt, call the model, write outputs.

Outputs are redacted of API keys before LangGraph writes them: a reply (or a step's value)
that repeats an API key would otherwise be stored in the checkpoints, the asset value and
printed state. Personal data stays (redact_pii masks it where it is stored or printed, not
in the run's own state); ``before_llm`` masks the rendered prompt.

A node with ``tools`` loops through tool calls first (tool_loop.py); a node with
``function`` is a Python step (python_step.py).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, ValidationError

from agents_pipelines.errors import OutputValidationError
from agents_pipelines.graph.dry_run import dry_run_hints
from agents_pipelines.graph.python_step import python_step
from agents_pipelines.graph.reply_text import text_of
from agents_pipelines.graph.state import output_model
from agents_pipelines.graph.tool_loop import async_tool_node, tool_node
from agents_pipelines.graph.value_limits import async_limited, limited
from agents_pipelines.llm.cache import share_hits
from agents_pipelines.llm.served_tier import share_served_tiers
from agents_pipelines.llm.simulated import SimulatedChatModel
from agents_pipelines.redaction import redact_value
from agents_pipelines.spec.models import Node, RegistryPrompt, WorkflowSpec
from agents_pipelines.spec.placeholders import parse_template

# The additional_kwargs key of a registry prompt's version on its message.
PROMPT_VERSION = "agents_pipelines_prompt_version"

NodeFunction = Callable[[dict[str, Any]], dict[str, Any]]
AsyncNodeFunction = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


def make_node(spec: WorkflowSpec, node: Node, model: BaseChatModel | None) -> NodeFunction:
    """The action of one node: state in, the node's outputs out, redacted and each within
    the state value limit (graph.value_limits)."""
    action = _action(spec, node, model)
    return limited(spec, node, lambda state: redact_value(action(state), keys_only=True))


def make_async_node(
    spec: WorkflowSpec, node: Node, model: BaseChatModel | None
) -> AsyncNodeFunction:
    """The same action for LangGraph's async path (a map node's items): the model's calls
    are awaited, so a call in flight holds no thread. A Python step, being the user's sync
    code, runs on the event loop's thread pool."""
    action = _async_action(spec, node, model)

    async def redacted(state: dict[str, Any]) -> dict[str, Any]:
        return redact_value(await action(state), keys_only=True)

    return async_limited(spec, node, redacted)


def _action(spec: WorkflowSpec, node: Node, model: BaseChatModel | None) -> NodeFunction:
    if node.function is not None:
        return python_step(spec, node)
    assert model is not None  # an LLM node always has its model (graph.builder)
    return _PromptNode(spec, node, model).action()


def _async_action(spec: WorkflowSpec, node: Node, model: BaseChatModel | None) -> AsyncNodeFunction:
    if node.function is not None:
        step = python_step(spec, node)

        async def in_pool(state: dict[str, Any]) -> dict[str, Any]:
            context = contextvars.copy_context()  # the item's callbacks and metadata
            return await asyncio.get_running_loop().run_in_executor(None, context.run, step, state)

        return in_pool
    assert model is not None
    return _PromptNode(spec, node, model).async_action()


class _PromptNode:
    """A single ``str`` output is a plain text call; anything else is one structured call,
    a single ``str`` with choices included (its enum holds the reply to a label)."""

    def __init__(self, spec: WorkflowSpec, node: Node, model: BaseChatModel):
        text = node.prompt_text
        assert text is not None
        self.spec, self.node, self.model = spec, node, model
        self.prompt = parse_template(text)
        self.system = parse_template(node.system) if node.system else None
        # A registry prompt's version rides on the message, unsent (Gemini's request is made
        # of the content), so that the development cache keys by it (llm/cache.py).
        version = node.prompt.pinned_uri if isinstance(node.prompt, RegistryPrompt) else None
        self.version = {PROMPT_VERSION: version} if version else {}
        self.hints = _simulation_hints(spec, node, model)
        self.mask = _prompt_mask(spec)
        self.text_output: str | None = None
        self.schema: type[BaseModel] | None = None
        self.json_mode: dict[str, Any] = {}
        if len(node.outputs) == 1 and _is_free_text(spec, node.outputs[0]):
            self.text_output = node.outputs[0]
            return
        self.schema = output_model(spec, node.outputs, f"{spec.flow.name}__{node.id}__output")
        # Gemini's JSON mode, as ChatGoogleGenerativeAI.with_structured_output binds it;
        # calling the model directly keeps the trace to one span per LLM call, and we
        # validate ourselves.
        self.json_mode = {
            "response_mime_type": "application/json",
            "response_json_schema": self.schema.model_json_schema(),
            "ls_structured_output_format": {
                "kwargs": {"method": "json_schema"},
                "schema": self.schema.model_json_schema(),
            },
        }

    def messages(self, state: dict[str, Any]) -> list[BaseMessage]:
        human = HumanMessage(self.mask(self.prompt.render(state)), additional_kwargs=self.version)
        if self.system is None:
            return [human]
        return [SystemMessage(self.mask(self.system.render(state))), human]

    def action(self) -> NodeFunction:
        structured = None if self.schema is None else self.structured_call
        if self.node.tools:
            return tool_node(self.spec, self.node, self.model, self.messages, structured)
        if self.text_output is not None:
            out = self.text_output
            return lambda state: {
                out: text_of(self.model.invoke(self.messages(state), **self.hints))
            }
        return lambda state: self.structured_call(self.messages(state))

    def async_action(self) -> AsyncNodeFunction:
        structured = None if self.schema is None else self.astructured_call
        tools = None
        if self.node.tools:
            tools = async_tool_node(self.spec, self.node, self.model, self.messages, structured)
        out = self.text_output

        async def action(state: dict[str, Any]) -> dict[str, Any]:
            share_hits()  # so that the trace marks this task's cache hits
            share_served_tiers()  # and prices its calls at the tier that served them
            if tools is not None:
                return await tools(state)
            if out is not None:
                return {out: text_of(await self.model.ainvoke(self.messages(state), **self.hints))}
            return await self.astructured_call(self.messages(state))

        return action

    def structured_call(self, conversation: list[BaseMessage]) -> dict[str, Any]:
        return self._parsed(
            text_of(self.model.invoke(conversation, **self.json_mode, **self.hints))
        )

    async def astructured_call(self, conversation: list[BaseMessage]) -> dict[str, Any]:
        reply = await self.model.ainvoke(conversation, **self.json_mode, **self.hints)
        return self._parsed(text_of(reply))

    def _parsed(self, reply: str) -> dict[str, Any]:
        assert self.schema is not None
        node, spec = self.node, self.spec
        try:
            parsed = self.schema.model_validate_json(strip_fence(reply))
        except ValidationError as exc:
            raise OutputValidationError(
                f"Node `{node.id}` of workflow {spec.flow.name}: the model's structured reply "
                f"does not fit the output fields {node.outputs} ({_reason(exc)}). Fix: describe "
                "the expected values in the prompt or in the state fields' descriptions, or "
                + _loosen(exc)
            ) from None
        return {out: getattr(parsed, out) for out in node.outputs}


def _prompt_mask(spec: WorkflowSpec) -> Callable[[str], str]:
    """What the prompt goes through before it is sent: redact_pii's masker when
    ``before_llm`` is set; else nothing (the model reads the prompt as written)."""
    pii = spec.config.observability.mlflow.pii()
    if pii is None or not pii.before_llm:
        return str
    from agents_pipelines.redaction.pii import masker_for

    return masker_for(pii).mask


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
