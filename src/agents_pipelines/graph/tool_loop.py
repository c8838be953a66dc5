"""A node whose model may call tools: Gemini function calling, in a loop.

The model is bound to the node's tools (``bind_tools``). While its reply holds tool calls,
each tool runs and its result goes back as a ToolMessage (a function response), and the
model is called again; once it answers in text, that answer fills the outputs. A tool that
raises returns its error to the model as its result, so the model can recover; autolog
marks the tool's span as failed. Past ``max_tool_calls`` the node fails, its spend kept.

Gemini 2.5 does not take function calling and JSON mode in one request. A node with
structured outputs therefore loops with tools in text, then makes one last JSON-mode call,
without tools, that turns the model's answer into the output fields.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool

from agents_pipelines.errors import PythonTimeoutError, ToolCallLimitError
from agents_pipelines.graph.reply_text import text_of
from agents_pipelines.graph.time_limit import TimeLimit
from agents_pipelines.graph.value_limits import bounded_result
from agents_pipelines.redaction import redact
from agents_pipelines.spec.models import Node, WorkflowSpec
from agents_pipelines.spec.python_refs import import_ref

NodeFunction = Callable[[dict[str, Any]], dict[str, Any]]
Messages = Callable[[dict[str, Any]], list[BaseMessage]]
StructuredCall = Callable[[list[BaseMessage]], dict[str, Any]]
AsyncNodeFunction = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]
AsyncStructuredCall = Callable[[list[BaseMessage]], Awaitable[dict[str, Any]]]

AS_JSON = "Give that answer as JSON that fits the response schema."


def load_tools(refs: list[str]) -> list[BaseTool]:
    """The tools ``refs`` name, as LangChain tools (functions are converted; load-time rules
    have checked they are typed and documented)."""
    tools = []
    for ref in refs:
        target = import_ref(ref)
        if isinstance(target, BaseTool):
            tools.append(target)
        elif callable(target):
            tools.append(StructuredTool.from_function(target))
    return tools


def tool_node(
    spec: WorkflowSpec,
    node: Node,
    model: BaseChatModel,
    messages: Messages,
    structured: StructuredCall | None,
) -> NodeFunction:
    """The node's action. ``structured`` makes the final JSON-mode call; None when the node
    has a single ``str`` output, which the model's text answer fills."""
    tools = {tool.name: tool for tool in load_tools(node.tools)}
    bound = model.bind_tools(list(tools.values()))
    where = f"Node `{node.id}` of workflow {spec.flow.name}"
    limit = spec.config.execution.max_tool_result_chars

    def action(state: dict[str, Any]) -> dict[str, Any]:
        conversation = messages(state)
        called = 0
        while True:
            reply = bound.invoke(conversation)
            conversation.append(reply)
            if not isinstance(reply, AIMessage) or not reply.tool_calls:
                break
            called = _count(called, reply, node, where)
            results = [_run_tool(tools, call, node) for call in reply.tool_calls]
            conversation += [bounded_result(result, limit, where) for result in results]
        if structured is None:
            return {node.outputs[0]: text_of(reply)}
        return structured(_as_json_request(messages(state), reply))

    return action


def async_tool_node(
    spec: WorkflowSpec,
    node: Node,
    model: BaseChatModel,
    messages: Messages,
    structured: AsyncStructuredCall | None,
) -> AsyncNodeFunction:
    """``tool_node`` for LangGraph's async path: the model's calls are awaited; a sync tool
    runs on the event loop's thread pool (LangChain's ``ainvoke`` of a sync tool)."""
    tools = {tool.name: tool for tool in load_tools(node.tools)}
    bound = model.bind_tools(list(tools.values()))
    where = f"Node `{node.id}` of workflow {spec.flow.name}"
    limit = spec.config.execution.max_tool_result_chars

    async def action(state: dict[str, Any]) -> dict[str, Any]:
        conversation = messages(state)
        called = 0
        while True:
            reply = await bound.ainvoke(conversation)
            conversation.append(reply)
            if not isinstance(reply, AIMessage) or not reply.tool_calls:
                break
            called = _count(called, reply, node, where)
            results = [await _arun_tool(tools, call, node) for call in reply.tool_calls]
            conversation += [bounded_result(result, limit, where) for result in results]
        if structured is None:
            return {node.outputs[0]: text_of(reply)}
        return await structured(_as_json_request(messages(state), reply))

    return action


def _count(called: int, reply: AIMessage, node: Node, where: str) -> int:
    """The tool calls so far with ``reply``'s; past ``max_tool_calls`` the node fails."""
    called += len(reply.tool_calls)
    if called > node.max_tool_calls:
        raise ToolCallLimitError(
            f"{where}: the model asked for {called} tool calls, over max_tool_calls "
            f"{node.max_tool_calls}. Fix: say in the prompt when to stop calling tools, "
            "or raise max_tool_calls."
        )
    return called


def _as_json_request(start: list[BaseMessage], reply: BaseMessage) -> list[BaseMessage]:
    """The last, JSON-mode call's conversation: the request, the model's answer in text."""
    answer = [AIMessage(text_of(reply))] if reply.text else []  # Gemini refuses empty parts
    return [*start, *answer, HumanMessage(AS_JSON)]


def _unknown_tool(tools: dict[str, BaseTool], name: str, call_id: str) -> ToolMessage:
    known = ", ".join(tools)
    return ToolMessage(
        f"Error: there is no tool `{name}`; the tools are: {known}.",
        tool_call_id=call_id,
        name=name,
        status="error",
    )


def _as_message(result: Any, name: str, call_id: str) -> ToolMessage:
    if isinstance(result, ToolMessage):
        return result
    return ToolMessage(str(result), tool_call_id=call_id, name=name)


def _failed(exc: Exception, name: str, call_id: str) -> ToolMessage:
    # Redacted: the model may repeat what it is told, into the state, the cache and logs.
    error = redact(f"Error: {type(exc).__name__}: {exc}", keys_only=True)  # the model reads it
    return ToolMessage(error, tool_call_id=call_id, name=name, status="error")


async def _arun_tool(tools: dict[str, BaseTool], call: ToolCall, node: Node) -> ToolMessage:
    """``_run_tool`` on the async path."""
    name, call_id = call["name"], call.get("id") or ""
    tool = tools.get(name)
    if tool is None:
        return _unknown_tool(tools, name, call_id)
    try:
        result = await _ainvoke_within(tool, call, _time_limit(node, name))
    except PythonTimeoutError:  # the node fails, like a Gemini time-out
        raise
    except Exception as exc:  # the model hears of it and may try otherwise
        return _failed(exc, name, call_id)
    return _as_message(result, name, call_id)


def _run_tool(tools: dict[str, BaseTool], call: ToolCall, node: Node) -> ToolMessage:
    """The tool's result, or its error, as the function response for ``call``."""
    name, call_id = call["name"], call.get("id") or ""
    tool = tools.get(name)
    if tool is None:
        return _unknown_tool(tools, name, call_id)
    try:
        # A ToolCall in, a ToolMessage out; autolog makes the run a TOOL span.
        result = _time_limit(node, name).call(lambda: tool.invoke({**call, "type": "tool_call"}))
    except PythonTimeoutError:  # the node fails, like a Gemini time-out
        raise
    except Exception as exc:  # the model hears of it and may try otherwise
        return _failed(exc, name, call_id)
    return _as_message(result, name, call_id)


def _time_limit(node: Node, tool: str) -> TimeLimit:
    return TimeLimit(node.python_timeout_s, f"Tool `{tool}` called by node `{node.id}`")


async def _ainvoke_within(tool: BaseTool, call: ToolCall, limit: TimeLimit) -> Any:
    """An async tool is awaited (and cancelled at the limit); a sync one runs on the time
    limit's thread, not on the loop's pool, whose threads the interpreter joins at exit."""
    request = {**call, "type": "tool_call"}
    if isinstance(tool, StructuredTool) and tool.func is None:
        return await limit.await_(tool.ainvoke(request))
    return await limit.acall(lambda: tool.invoke(request))
