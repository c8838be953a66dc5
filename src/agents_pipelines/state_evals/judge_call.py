"""An LLM judge: one structured call that answers pass or fail with a rationale.

It takes the workflow nodes' path: the chat model of the run's backend, Gemini's JSON mode
with a schema (as graph.nodes does for structured outputs), the run's callbacks (so the
usage ledger prices the call and its budget guard runs before it) and, inside a run's
trace, an LLM span of its own. Transient failures are retried with the nodes' LangGraph
RetryPolicy (graph.builder.retry_policy), Retry-After included. The values it judges
reach it fenced as data, never as instructions (state_evals.judge_prompt).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import RetryPolicy
from pydantic import BaseModel, ConfigDict, Field

from agents_pipelines.graph.nodes import strip_fence
from agents_pipelines.llm.simulated import SimulatedChatModel
from agents_pipelines.spec.models import EvalSpec
from agents_pipelines.spec.placeholders import parse_template
from agents_pipelines.state_evals.judge_prompt import SYSTEM, judge_request
from agents_pipelines.usage.records import EVAL_KEY, NODE_KEY

T = TypeVar("T")


class JudgeReply(BaseModel):
    """The judge's structured reply (its JSON schema is sent to the model)."""

    model_config = ConfigDict(extra="ignore", title="verdict")

    passed: bool = Field(description="true: the output meets the criterion; false: it does not.")
    rationale: str = Field(description="Why, in one or two sentences.")


_SCHEMA = JudgeReply.model_json_schema()
_JSON_MODE: dict[str, Any] = {
    "response_mime_type": "application/json",
    "response_json_schema": _SCHEMA,
    "ls_structured_output_format": {"kwargs": {"method": "json_schema"}, "schema": _SCHEMA},
}
# The simulated backend passes every judge: a dry run (no key) is never blocked by one.
SIMULATED_RATIONALE = "Simulated verdict: the simulated backend passes every judge."
_SIMULATED_VERDICT = {"passed": {"const": True}, "rationale": {"const": SIMULATED_RATIONALE}}


def call_name(entry: EvalSpec) -> str:
    """How a judge's call is named as a node: in the node_calls table, cost_summary.json,
    and its span."""
    return f"eval:{entry.name}"


def ask_judge(
    entry: EvalSpec,
    state: Mapping[str, Any],
    model: BaseChatModel,
    callbacks: Sequence[BaseCallbackHandler],
    policy: RetryPolicy,
) -> JudgeReply:
    """The judge's verdict on ``state``. Raises what the call raises once its retries are
    spent (or at once, for a failure that is not transient), and ValueError for a reply
    that is not a verdict."""
    question = entry.judge_text
    assert question is not None
    request = judge_request(parse_template(question), state)
    messages = [SystemMessage(SYSTEM), HumanMessage(request)]
    config = RunnableConfig(
        callbacks=list(callbacks),
        metadata={NODE_KEY: call_name(entry), EVAL_KEY: entry.name},
        run_name=call_name(entry),
    )
    hints: dict[str, Any] = (
        {"value_hints": _SIMULATED_VERDICT} if isinstance(model, SimulatedChatModel) else {}
    )

    def call() -> str:
        return model.invoke(messages, config, **_JSON_MODE, **hints).text

    reply = with_retries(call, policy)
    try:
        return JudgeReply.model_validate_json(strip_fence(reply))
    except ValueError as exc:
        raise ValueError(
            f"the judge's reply is not a verdict {{passed, rationale}}: {reply[:200]!r}"
        ) from exc


def with_retries(call: Callable[[], T], policy: RetryPolicy) -> T:
    """``call`` under a LangGraph RetryPolicy, as LangGraph runs a node under it: the same
    attempts, backoff and jitter, and the same ``retry_on`` test (which also waits for the
    server's Retry-After).

    Kept over the libraries, measured on 2026-12-05: tenacity's ``Retrying`` with the same
    stop, wait and ``retry_if_exception`` costs 62 to 75 us per judge call that succeeds
    (40 us prebuilt) against under 1 us here, on a call the simulated backend answers in
    about 830 us; LangChain's ``Runnable.with_retry`` retries by exception type only (not
    by status code, nor after Retry-After) and adds a run of its own to the callbacks."""
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if attempt >= policy.max_attempts or not _retries(policy, exc):
                raise
        interval = min(
            policy.max_interval, policy.initial_interval * policy.backoff_factor ** (attempt - 1)
        )
        time.sleep(interval + random.uniform(0, 1) if policy.jitter else interval)
        attempt += 1


def _retries(policy: RetryPolicy, exc: Exception) -> bool:
    test = policy.retry_on
    if isinstance(test, type):
        return isinstance(exc, test)
    if isinstance(test, Sequence):
        return isinstance(exc, tuple(test))
    return bool(test(exc))
