"""Record every LLM call of a run through LangChain's callbacks.

LangGraph runs parallel branches on worker threads, so the ledger is locked. It sees each
call's node (``langgraph_node`` in the callback metadata), model, usage, latency and the
tools the model called; a failed attempt (a 429 that is retried, say) is recorded with the
usage it reported. A Python step reports itself with a custom event (PYTHON_STEP_EVENT):
it is listed with the calls, at no cost, but is not an LLM call.

A map node's item calls run in a LangGraph task of their own: they name their node and
item index in the metadata (NODE_KEY, ITEM_KEY), and an item skipped for good is reported
as the custom event ITEM_FAILED. A batched call (llm.batch) reports its job as the custom
event BATCH_JOB once answered: the run's ``batch_jobs``.

A reply of the development cache (llm.cache) comes with its usage zeroed and the original
under CACHE_HIT in its response_metadata: it is recorded as an LLM call of no tokens and
no cost, marked ``cache_hit``, with its original usage priced as ``saved``.

Each call is priced at the service tier that served it: the reply names it in its
``response_metadata`` (SERVED_TIER); a call with no reply keeps the tier it asked for
(TIER_KEY in the metadata).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, overload
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from agents_pipelines.redaction import redact
from agents_pipelines.usage.budget import NextPrompt
from agents_pipelines.usage.estimate import CHARS_PER_TOKEN
from agents_pipelines.usage.records import (
    BATCH_JOB,
    CACHE_HIT,
    CANCELLED,
    EVAL_KEY,
    ITEM_FAILED,
    ITEM_KEY,
    NODE_KEY,
    PYTHON,
    SERVED_TIER,
    STANDARD,
    TIER_KEY,
    CallRecord,
    Figures,
    ItemFailure,
    Price,
    Pricer,
    ResumedNode,
    TokenUsage,
    UsageSummary,
)

PYTHON_STEP_EVENT = "agents_pipelines.python_step"
_CANCELLED_NOTE = "cancelled in flight by a stop: no usage came back, Gemini may bill it"
CACHE_HIT_SOURCE = "development cache: not billed"


class _Pending:
    __slots__ = ("asked", "eval", "item", "model", "node", "prompt", "started", "tier")

    def __init__(
        self,
        node: str,
        model: str,
        prompt: str | None,
        item: int | None,
        eval: str | None,
        tier: str,
    ):
        self.node, self.model, self.prompt, self.item = node, model, prompt, item
        self.eval, self.tier = eval, tier
        self.asked: NextPrompt | None = None  # its prompt as sized before it was sent
        self.started = time.perf_counter()


class UsageLedger(BaseCallbackHandler):
    """A LangChain callback that keeps one CallRecord per LLM call."""

    run_inline = True  # called on the calling thread, so timings are the call's own
    raise_error = True  # so that ``before_call`` can stop a call (a budget, say)

    def __init__(
        self,
        pricer: Pricer,
        keep_text: bool = False,
        before_call: Callable[[UsageSummary, NextPrompt], None] | None = None,
        after_call: Callable[[UsageSummary], None] | None = None,
    ):
        self._pricer = pricer
        self._keep_text = keep_text
        self._before_call = before_call
        self._after_call = after_call  # told the spend once a call's reply is priced
        self._lock = threading.Lock()
        self._pending: dict[UUID, _Pending] = {}
        self._calls: list[CallRecord] = []  # append-only: a summary is a prefix of it
        self._figures = Figures()  # the totals of _calls, added up as they come
        self._failed_items: list[ItemFailure] = []
        self._batch_jobs: dict[str, dict[str, Any]] = {}  # by job name, as last reported
        # The calls no node has claimed yet, by node and item (see claim()).
        self._unclaimed: dict[tuple[str, int | None], list[CallRecord]] = {}
        self.resumed: tuple[ResumedNode, ...] = ()  # set by the runner on a resumed run

    def summary(self) -> UsageSummary:
        """The calls so far, in O(1): the checks before and after each call read one, and
        a copy of every call each time made a map of N items O(N²) (10,000 items: 10^8
        records copied)."""
        with self._lock:
            calls = _Prefix(self._calls, len(self._calls))
            failed = _Prefix(self._failed_items, len(self._failed_items))
            jobs = tuple(self._batch_jobs.values())
            return UsageSummary(calls, failed, self.resumed, jobs, self._figures)

    def claim(self, node: str, item: int | None) -> ResumedNode:
        """The calls of ``node`` (one map item) not claimed yet: what the task that ends now
        spent, its retried attempts included, for the checkpoint to keep (graph.node_spend).
        A node runs once per super-step and an item once per pass, so unclaimed calls with
        that name are the task's own, and a looping route's next pass claims only its own."""
        with self._lock:
            mine = self._unclaimed.pop((node, item), [])
        return ResumedNode.of(node, item, mine)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        asked = None
        if self._before_call is not None:  # may raise: the call is then never made
            asked = self._next_prompt(messages, metadata)
            self._before_call(self.summary(), asked)
        prompt = None
        if self._keep_text:
            prompt = "\n\n".join(f"[{m.type}] {m.text}" for batch in messages for m in batch)
        node, item = _node_and_item(metadata)
        judged = metadata.get(EVAL_KEY)
        model = str(metadata.get("ls_model_name", ""))
        judge = judged if isinstance(judged, str) else None
        pending = _Pending(node, model, prompt, item, judge, _asked_tier(metadata))
        pending.asked = asked
        with self._lock:
            self._pending[run_id] = pending

    def _next_prompt(
        self, messages: list[list[BaseMessage]], metadata: dict[str, Any]
    ) -> NextPrompt:
        """The call's prompt sized by characters / 4 (usage.estimate's no-key rule): no
        request to count it, and about 1 µs per thousand characters."""
        characters = sum(len(message.text) for batch in messages for message in batch)
        tokens = math.ceil(characters / CHARS_PER_TOKEN)
        model = str(metadata.get("ls_model_name", ""))
        tier = _asked_tier(metadata)
        price = self._pricer.price(model, TokenUsage(prompt=tokens, total=tokens), tier)
        node, _ = _node_and_item(metadata)
        return NextPrompt(node, tokens, None if price is None else price.total_usd)

    def check_job(self, run_ids: Sequence[UUID]) -> None:
        """Before a batch job of these calls is submitted: the ``before_call`` hook with
        their prompts summed, so the budget and spend limits judge the job as a whole
        (each call was judged alone as it started). May raise; then nothing is sent."""
        if self._before_call is None:
            return
        with self._lock:
            asked = [p.asked for r in run_ids if (p := self._pending.get(r)) and p.asked]
        if not asked:
            return
        costs = [a.cost_usd for a in asked]
        cost = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
        tokens = sum(a.tokens for a in asked)
        self._before_call(self.summary(), NextPrompt(asked[0].node, tokens, cost, len(asked)))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        generation = response.generations[0][0] if response.generations else None
        message = getattr(generation, "message", None)
        usage = TokenUsage.from_langchain(getattr(message, "usage_metadata", None))
        reply = message.text if self._keep_text and message is not None else None
        tools = tuple(call["name"] for call in getattr(message, "tool_calls", None) or ())
        response_metadata = getattr(message, "response_metadata", None) or {}
        hit = response_metadata.get(CACHE_HIT)
        saved = TokenUsage.from_langchain(hit["usage"]) if isinstance(hit, dict) else None
        served = response_metadata.get(SERVED_TIER)
        served = served if isinstance(served, str) else None
        self._finish(run_id, usage, "ok", None, reply, tools, saved, served)
        if self._after_call is not None:
            self._after_call(self.summary())

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if not isinstance(error, Exception):  # a stop (a signal, a cancelled task)
            self._finish(run_id, TokenUsage(), CANCELLED, _CANCELLED_NOTE, None)
            return
        message = redact(f"{type(error).__name__}: {error}")  # errors may repeat the API key
        self._finish(run_id, TokenUsage(), "error", message, None)

    def cancel_in_flight(self) -> None:
        """Record the calls still in flight as cancelled: a stop ended the run under them.

        On LangGraph's async path (a map node's items) a stop cancels the item tasks, and
        LangChain reports no end for their calls (3 calls in flight, 0 recorded, measured);
        the requests were sent, and Gemini may bill them."""
        with self._lock:
            in_flight = list(self._pending)
        for run_id in in_flight:
            self._finish(run_id, TokenUsage(), CANCELLED, _CANCELLED_NOTE, None)

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name == ITEM_FAILED and isinstance(data, ItemFailure):
            with self._lock:
                self._failed_items.append(data)
            return
        if name == BATCH_JOB and isinstance(data, dict):  # each call of a job repeats it
            with self._lock:
                self._batch_jobs[str(data["name"])] = dict(data)
            return
        if name != PYTHON_STEP_EVENT:
            return
        node, item = _node_and_item(metadata or {})
        error = data.get("error")
        record = CallRecord(
            node=node,
            model=PYTHON,
            usage=TokenUsage(),
            price=Price(0.0, 0.0, "a Python step: no tokens"),
            latency_s=float(data.get("latency_s", 0.0)),
            status="ok" if error is None else "error",
            error=None if error is None else redact(str(error)),
            item=item,
            kind=PYTHON,
        )
        self._append(record)

    def _append(self, record: CallRecord) -> None:
        with self._lock:
            self._calls.append(record)
            self._figures = self._figures.plus(record)
            self._unclaimed.setdefault((record.node, record.item), []).append(record)

    def _finish(
        self,
        run_id: UUID,
        usage: TokenUsage,
        status: str,
        error: str | None,
        reply: str | None,
        tools: tuple[str, ...] = (),
        saved: TokenUsage | None = None,
        served_tier: str | None = None,
    ) -> None:
        with self._lock:
            pending = self._pending.pop(run_id, None)
        if pending is None:
            return
        tier = served_tier or pending.tier  # priced at the tier that served the call
        price = self._pricer.price(pending.model, usage, tier) if usage.total else None
        interactive = None
        if tier != STANDARD and price is not None:
            interactive = self._pricer.price(pending.model, usage)
        if saved is not None:  # a cache hit: nothing billed, its original usage priced apart
            price = Price(0.0, 0.0, CACHE_HIT_SOURCE)
        record = CallRecord(
            node=pending.node,
            model=pending.model,
            usage=usage,
            price=price,
            latency_s=time.perf_counter() - pending.started,
            status=status,
            error=error,
            prompt=pending.prompt,
            reply=reply,
            tools=tools,
            item=pending.item,
            cache_hit=saved is not None,
            saved=None if saved is None else self._pricer.price(pending.model, saved, tier),
            eval=pending.eval,
            tier=tier,
            interactive_cost_usd=None if interactive is None else interactive.total_usd,
        )
        self._append(record)


def _asked_tier(metadata: dict[str, Any]) -> str:
    """The service tier a call asked for (llm.tiered_gemini names it in the metadata)."""
    tier = metadata.get(TIER_KEY)
    return tier if isinstance(tier, str) else STANDARD


def _node_and_item(metadata: dict[str, Any]) -> tuple[str, int | None]:
    """The workflow node of a call, and its item index when a map node made it (a map's
    item task runs under its own LangGraph node name, so it names the node itself)."""
    node = metadata.get(NODE_KEY) or metadata.get("langgraph_node", "")
    item = metadata.get(ITEM_KEY)
    return str(node), item if isinstance(item, int) else None


class _Prefix(Sequence[Any]):
    """The first ``length`` entries of an append-only list: a snapshot that copies nothing
    (the list only grows, so its first ``length`` entries never change)."""

    __slots__ = ("_items", "_length")

    def __init__(self, items: list[Any], length: int):
        self._items, self._length = items, length

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._items[: self._length][index]
        if not -self._length <= index < self._length:
            raise IndexError(index)
        return self._items[index % self._length]

    def __iter__(self) -> Any:
        for index in range(self._length):
            yield self._items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == self._length and all(
                a == b for a, b in zip(self, other, strict=True)
            )
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._items[: self._length])
