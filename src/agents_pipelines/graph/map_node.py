"""A map node: the node's own action once per list item, as LangGraph ``Send`` tasks.

For ``{id: classify, map: {over: reviews, as: review}, outputs: [labels]}`` the graph has
three LangGraph nodes:

    edges in ─▶ __classify__map ─┬─ Send × wave ─▶ __classify__item ─▶ __classify__wave ─┐
                                 │        ▲                                               │
                                 │        └──────────── Send × next wave ─────────────────┤
                                 └─ empty list ─────────────────▶ classify ◀─ all done ───┘

- ``__classify__map`` fails a list longer than ``max_items`` before any call, and clears
  the results of an earlier pass (a route may loop back); its conditional edge sends one
  task per item of the first wave, with the pass's limit of calls in flight.
- The items go in waves of ``wave_size`` (16 x ``max_concurrency``): each task LangGraph
  holds (its config, callbacks, Send payload and checkpoint write) lives until its
  super-step ends, about 9 KB an item, so sending every item at once made a run's memory
  grow with the list (10,000 items: ~90 MB). ``__classify__wave`` follows each wave and
  sends the next one, from the first item without a result, or goes on to the gather.
- ``__classify__item`` calls the node's action (``make_node``, built against an item view
  of the spec: outputs typed by their element types, ``review`` a field of its element
  type) on the state plus ``{review: item}``, under the node's RetryPolicy, and appends
  ``(index, outputs)`` to the private channel ``__classify__results``.
- ``classify`` puts the results in list order and writes the output lists: the node's
  update, under its own id, like any node's.

Names that start with ``__`` cannot clash with node ids (which start with a letter), and
the runner leaves them out of ``node_runs``.

A graph with a map node runs on LangGraph's async path (graph.event_loop): an item awaits
its call, so ``max_concurrency`` calls in flight hold no thread each.
"""

from __future__ import annotations

import asyncio
import operator
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.graph import StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, RetryPolicy, Send

from agents_pipelines._compat.langgraph import config_context
from agents_pipelines.errors import BudgetExceededError, UnrecordedRequestError, WorkflowRunError
from agents_pipelines.graph import node_spend
from agents_pipelines.llm.gemini import describe_failure, is_transient, retry_after_s, status_code
from agents_pipelines.redaction import redact
from agents_pipelines.spec import field_types
from agents_pipelines.spec.models import MapSpec, Node, StateField, WorkflowSpec
from agents_pipelines.spec.placeholders import parse_template
from agents_pipelines.usage.records import ITEM_FAILED, ITEM_KEY, NODE_KEY, ItemFailure

AsyncNodeAction = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]
ActionFactory = Callable[[WorkflowSpec], AsyncNodeAction]


def entry(node: Node) -> str:
    """The LangGraph node that edges into ``node`` lead to."""
    return f"__{node.id}__map" if node.map is not None else node.id


def add_map_node(
    graph: StateGraph[Any],
    spec: WorkflowSpec,
    node: Node,
    action: ActionFactory,
    retry: RetryPolicy,
) -> None:
    """Add ``node``'s three LangGraph nodes; ``action(item_spec)`` builds its per-item action
    (``make_async_node`` for an LLM call or a Python step)."""
    assert node.map is not None
    # Any: LangGraph's overloads type node functions by their state class, not a dict.
    start: Any = _Start(node, node.map, spec.flow.name)
    item: Any = _ItemNode(
        node, node.map, action(item_spec(spec, node)), retry, items_at_once(spec, node)
    )
    gather: Any = _Gather(node, spec)
    graph.add_node(entry(node), start)
    # The Retry-After wait is the item's own (it must not block the event loop).
    item_retry = retry._replace(retry_on=is_transient)
    graph.add_node(_item_name(node), item, retry_policy=item_retry)
    next_wave: Any = _next_wave  # Any: as above
    graph.add_node(_wave_name(node), next_wave)
    graph.add_node(node.id, gather)
    fan_out = _FanOut(node, node.map, spec, wave_size(spec, node))
    for source in (entry(node), _wave_name(node)):
        graph.add_conditional_edges(source, fan_out, [_item_name(node), node.id])
    graph.add_edge(_item_name(node), _wave_name(node))


def results_channels(spec: WorkflowSpec) -> dict[str, Any]:
    """One private results channel per map node (items append to it)."""
    return {
        _results(node): Annotated[list[tuple[int, Any]], operator.add]
        for node in spec.nodes
        if node.map is not None
    }


def tasks_needed(spec: WorkflowSpec) -> int:
    """Tasks a run may run at once so that ``max_concurrency`` is what bounds its item calls
    (LangGraph's default limit is min(32, CPUs + 4): 6 on a 2-core machine)."""
    return sum(items_at_once(spec, n) for n in spec.nodes if n.map is not None) + len(spec.nodes)


def items_at_once(spec: WorkflowSpec, node: Node) -> int:
    """A map node's items in flight at once: ``max_concurrency``; in batch mode, all of
    them, since they wait together for the one job that answers them (llm.batch)."""
    assert node.map is not None
    return node.map.max_items if is_batch(spec, node) else node.map.max_concurrency


WAVE_ROUNDS = 16  # a wave is 16 rounds of max_concurrency calls


def wave_size(spec: WorkflowSpec, node: Node) -> int:
    """Items sent at once: 16 rounds of ``max_concurrency`` calls. A wave ends with its
    slowest call, so at even latencies a wave of 16 rounds idles its slots for under a
    round's tail (<= 1/16 of its time). A batch node's items all go in its one job."""
    assert node.map is not None
    return min(node.map.max_items, WAVE_ROUNDS * items_at_once(spec, node))


def extra_steps(spec: WorkflowSpec) -> int:
    """Super-steps a run may take beyond ``max_steps``: a map's waves after its first
    take two each (the items, then the next wave's fan-out), one full pass per map node.
    ``max_steps`` counts the workflow's steps, not how its lists are cut."""
    return sum(
        2 * (-(-node.map.max_items // wave_size(spec, node)) - 1)
        for node in spec.nodes
        if node.map is not None
    )


def is_batch(spec: WorkflowSpec, node: Node) -> bool:
    """Whether ``node``'s calls go through Gemini's Batch API (``llm.batch``)."""
    return node.calls_llm and spec.config.llm.merged(node.llm).batch_mode is not None


def has_map(spec: WorkflowSpec) -> bool:
    """Whether ``spec``'s graph runs on LangGraph's async path (graph.event_loop): a map
    node's items, and a batch node's call (a stop cancels its job: the call is a task)."""
    return any(node.map is not None or is_batch(spec, node) for node in spec.nodes)


def item_spec(spec: WorkflowSpec, node: Node) -> WorkflowSpec:
    """The spec as one item sees it: each output typed by its element type (so one ``str``
    element is a text call, anything else a JSON-mode call typed per item), and the item
    a field of the ``over`` list's element type."""
    assert node.map is not None
    fields = dict(spec.state.fields)
    for name in node.outputs:
        fields[name] = fields[name].model_copy(update={"type": _element(fields[name].type)})
    fields[node.map.as_] = StateField(type=_element(fields[node.map.over].type))  # type: ignore[arg-type]
    state = spec.state.model_copy(update={"fields": fields})
    return spec.model_copy(update={"state": state})


def _element(type_name: str) -> str:
    element = field_types.element_name(type_name)
    assert element is not None  # map_rules: `over` and every output are list fields
    return element


def _item_name(node: Node) -> str:
    return f"__{node.id}__item"


def _wave_name(node: Node) -> str:
    return f"__{node.id}__wave"


def _results(node: Node) -> str:
    return f"__{node.id}__results"


def _next_wave(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
    """Runs once after each wave; its conditional edge (``_FanOut``) sends the next. First
    the run's trace export catches up (``PACE_KEY``), so that the spans waiting for the
    store do not grow with the items when calls come back faster than it writes."""
    if (pace := config.get("configurable", {}).get(PACE_KEY)) is not None:
        pace()
    return {}


class _Pass:
    """One pass of a map node over its list: a slot per call in flight, and a stop once an
    item has failed the node (the items still waiting for a slot then make no call). Its
    items are tasks of one event loop (graph.event_loop), so an asyncio semaphore bounds
    them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.slots = asyncio.Semaphore(limit)
        self.stopped = False
        self.failure: BaseException | None = None  # the error that stopped the pass
        self.reporter: int | None = None  # the item that failed it: it waits for the others
        self.items: set[asyncio.Task[Any]] = set()  # the item tasks of the pass

    async def others_ended(self) -> None:
        """Wait until the pass's other items have ended, then let their results be saved.

        LangGraph leaves the super-step at its first failed task, and a task finishing
        after that has its writes saved, if at all, after the run has failed: a retry that
        starts first pays for those items again. So the item that fails the pass fails it
        once the calls already made have ended and their tasks have returned (as on
        threads, where LangGraph waits for the running ones)."""
        me = asyncio.current_task()
        others = {task for task in self.items if task is not me and not task.done()}
        if others:
            await asyncio.wait(others)
        for _ in range(3):  # their done callbacks, which commit their writes, run first
            await asyncio.sleep(0)

    def __repr__(self) -> str:  # how a trace at artifact_level full shows it
        return f"<at most {self.limit} item calls in flight>"


class ItemStoppedError(Exception):
    """Raised by an item that found its pass stopped by another item's failure: it made no
    call. It must not end as a finished task (one that writes nothing would be taken as
    done, and not called when the run resumes). It carries the error that stopped the
    pass, which is what the run reports (``first_error``): LangGraph raises any one of a
    super-step's errors. Not transient, so the node's RetryPolicy does not retry it."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def first_error(exc: BaseException) -> BaseException:
    """The error a run reports: the one that stopped a map pass, not a stopped item's."""
    return exc.cause if isinstance(exc, ItemStoppedError) else exc


class Passes:
    """The passes of one run's map nodes, by node and super-step (all items of a pass run in
    the super-step after its fan-out). A run's own object (the runner puts it in
    ``config["configurable"][PASSES_KEY]``): a ``Send`` is stored in the checkpoint, so it
    carries plain values only, and a resumed run makes the pass anew for the items left."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._passes: dict[tuple[str, int], _Pass] = {}
        self.stopping = False  # the run is stopped: cancelled items cancel their calls

    def stop(self) -> None:
        self.stopping = True

    def get(self, node: str, step: int, limit: int) -> _Pass:
        with self._lock:
            return self._passes.setdefault((node, step), _Pass(limit))


PASSES_KEY = "agents_pipelines_map_passes"
# The run config's hook that waits for the run's trace export before each wave after the
# first (tracking.span_release.wait_for_store; absent when the run is not traced).
PACE_KEY = "agents_pipelines_map_pace"


@dataclass(frozen=True)
class _Item:
    """What a ``Send`` hands one item task, read from its plain payload: the index, the
    item and the state fields the node reads."""

    index: int
    value: Any
    state: Mapping[str, Any] = field(repr=False)

    def payload(self) -> dict[str, Any]:
        return {"index": self.index, "value": self.value, "state": dict(self.state)}

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> _Item:
        return cls(int(payload["index"]), payload["value"], payload["state"])


@dataclass(frozen=True)
class _Start:
    node: Node
    map: MapSpec
    workflow: str

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        count = len(state[self.map.over])
        if count > self.map.max_items:
            raise WorkflowRunError(
                f"Node `{self.node.id}` of workflow {self.workflow} maps over "
                f"`{self.map.over}`, which holds {count} items: more than map.max_items "
                f"({self.map.max_items}). No item was called. Fix: raise map.max_items "
                "(up to 100000), or give a shorter list."
            )
        return {_results(self.node): Overwrite([])}


@dataclass(frozen=True)
class _FanOut:
    """The next wave's ``Send``s: the items from the first one without a result (waves
    end whole, in order: an item's result, or its failure under ``skip``, is written as
    its task ends), or the gather once every item has one."""

    node: Node
    map: MapSpec
    spec: WorkflowSpec
    wave: int

    @property
    def __name__(self) -> str:
        # The conditional edge's span name. LangGraph's async path names the span by this
        # (its sync path says "RunnableCallable"); without one, MLflow's tracer fails.
        return f"__{self.node.id}__send"

    def __call__(self, state: dict[str, Any]) -> list[Send] | str:
        items = state[self.map.over]
        first = len(state[_results(self.node)])
        if first >= len(items):
            return self.node.id  # every item has its result (or there is none)
        read = _fields_read(self.spec, self.node)
        public = {k: v for k, v in state.items() if k in read}
        name = _item_name(self.node)
        wave = range(first, min(first + self.wave, len(items)))
        return [Send(name, _Item(i, items[i], public).payload()) for i in wave]


def _fields_read(spec: WorkflowSpec, node: Node) -> set[str]:
    """The state fields an item's call may read. Each Send is stored in the checkpoint:
    copying the whole state into each would store the list mapped over once per item
    (500 items: 250,000 copies). A prompt reads its placeholders; a Python step (or a tool
    loop) may read any field."""
    if node.function is not None or node.tools or node.prompt_text is None:
        return set(spec.state.fields)
    templates = [node.prompt_text, *([node.system] if node.system else [])]
    return {f for text in templates for f in parse_template(text).fields} & set(spec.state.fields)


class _ItemNode:
    """One item's task: the node's action on the state plus the item, named in the calls'
    callback metadata (node and index) so the ledger and the trace can tell items apart.

    An async node: LangGraph runs a graph with map nodes on its async path (the runner
    drives it on graph.event_loop), where an item awaiting its call holds no thread."""

    def __init__(
        self, node: Node, map_spec: MapSpec, action: AsyncNodeAction, retry: RetryPolicy, limit: int
    ):
        self._node, self._map, self._action, self._retry = node, map_spec, action, retry
        self._limit = limit  # calls in flight at once (items_at_once)

    async def __call__(self, task: Any, config: RunnableConfig, runtime: Runtime) -> dict[str, Any]:
        item = _Item.of(task)
        run = self._pass(config)
        config = merge_configs(
            config, {"metadata": {NODE_KEY: self._node.id, ITEM_KEY: item.index}}
        )
        wait_s: float | None = None
        fails_the_pass: Exception | None = None
        me = asyncio.current_task()
        if me is not None:
            run.items.add(me)
            me.add_done_callback(run.items.discard)
        try:
            async with run.slots:
                if run.stopped:  # an item failed the node: make no more calls
                    raise ItemStoppedError(run.failure or RuntimeError("the map pass stopped"))
                try:
                    # The call runs in the context that holds the item's config until it
                    # has ended (leaving the block resets the config in that context).
                    with config_context(config) as context:
                        state = {**item.state, self._map.as_: item.value}
                        call: asyncio.Task[Any] = asyncio.create_task(
                            self._action(state), context=context
                        )
                        outputs: Any = await self._finished(call, run, config)
                except Exception as exc:
                    if self._retried(exc, runtime):
                        wait_s = retry_after_s(exc)
                        raise
                    try:
                        outputs = self._failed_for_good(item, run, exc, config)
                    except Exception as failure:
                        fails_the_pass = failure
        finally:
            if wait_s:  # the server's Retry-After, awaited with the slot given back
                await asyncio.sleep(wait_s)
        if fails_the_pass is not None:  # with its slot given back: the others may need it
            # Only the item that stopped the pass waits: items failing at once (a batch
            # job's answers arrive together) would otherwise each wait for the others.
            if run.reporter == item.index:
                await run.others_ended()
            raise fails_the_pass
        return {
            _results(self._node): [(item.index, outputs)],
            **node_spend.entry(config, self._node.id, item.index),
        }

    @staticmethod
    async def _finished(call: asyncio.Task[Any], run: _Pass, config: RunnableConfig) -> Any:
        """``call``'s outputs. When one item fails the node, LangGraph cancels the other
        tasks of the super-step; a call already made then still ends, as it did on a
        thread, so its reply and its spend are kept (and a resumed run does not make it
        again). A stopped run cancels the call."""
        while True:
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                passes = (config.get("configurable") or {}).get(PASSES_KEY)
                if passes is None or passes.stopping:
                    # An item a cancelled one's slot wakes before its own cancellation
                    # arrives must not start a call.
                    run.stopped = True
                    call.cancel()
                    await asyncio.wait([call])
                    raise

    def _pass(self, config: RunnableConfig) -> _Pass:
        passes = (config.get("configurable") or {}).get(PASSES_KEY)
        if passes is None:  # a graph run without the runner: LangGraph's limit bounds calls
            return _Pass(self._limit)
        step = int((config.get("metadata") or {}).get("langgraph_step", 0))
        return passes.get(self._node.id, step, self._limit)

    def _retried(self, exc: Exception, runtime: Runtime) -> bool:
        # Whether LangGraph will run this item again: the node's RetryPolicy retries
        # transient errors until max_attempts. (The policy's retry_on only tests the
        # error: on the event loop, the Retry-After wait is the item's own, above.)
        attempt = runtime.execution_info.node_attempt if runtime.execution_info else 1
        return attempt < self._retry.max_attempts and is_transient(exc)

    def _failed_for_good(
        self, item: _Item, run: _Pass, exc: Exception, config: RunnableConfig
    ) -> str:
        """``skip``: report the failure, and return its text in place of the outputs.
        ``fail``: stop the pass and raise. A spent budget always stops the run, and so does
        a request that a replay has not recorded (never skipped as if the model had failed)."""
        stops_the_run = isinstance(exc, BudgetExceededError | UnrecordedRequestError)
        if self._map.on_item_error == "fail" or stops_the_run:
            exc.add_note(f"In item {item.index} of map node `{self._node.id}`.")
            if run.failure is None:  # the first failure is the one reported
                run.failure, run.reporter = exc, item.index
            run.stopped = True
            raise exc
        error = _describe(exc)
        failure = ItemFailure(self._node.id, item.index, error)
        dispatch_custom_event(ITEM_FAILED, failure, config=config)
        return error


def _describe(exc: BaseException) -> str:
    if status_code(exc) is not None:
        return describe_failure(exc)
    text = redact(f"{type(exc).__name__}: {exc}")  # an error may repeat the API key
    return text[:500]


@dataclass(frozen=True)
class _Gather:
    """Writes each output list in item order; a skipped item gets the element type's
    empty value. Every item failing is no item to skip: the node fails."""

    node: Node
    spec: WorkflowSpec

    def __call__(self, state: dict[str, Any]) -> dict[str, Any]:
        results = dict(state[_results(self.node)])
        ordered = [results[i] for i in range(len(results))]
        failed = [r for r in ordered if isinstance(r, str)]
        if ordered and len(failed) == len(ordered):
            raise WorkflowRunError(
                f"Node `{self.node.id}` of workflow {self.spec.flow.name}: all "
                f"{len(ordered)} items failed (first: {failed[0]}). on_item_error: skip "
                "skips single items, not a failure common to every item. Fix the cause "
                "(the key, the model, the prompt) and run again."
            )
        return {name: self._column(name, ordered) for name in self.node.outputs}

    def _column(self, name: str, ordered: list[Any]) -> list[Any]:
        empty = field_types.zero_value(_element(self.spec.state.fields[name].type))
        return [empty if isinstance(r, str) else r[name] for r in ordered]
