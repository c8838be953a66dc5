"""A map node keeps ``max_concurrency`` calls in flight without a thread per call, and a
stopped map run leaves no call running.

The real Gemini client (its async path) against the loopback server, which answers each
call after a delay and notes, as each call arrives, the threads of the process that are
not its own: with 20 calls in flight, a thread per call would show 20 more."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient

from agents_pipelines.runner import WorkflowRun, run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.testing import GeminiLoopbackServer, RecordedRequest, Reply
from agents_pipelines.tracking import drain_trace_export
from conftest import wait_until, write

ITEMS, DELAY_S, LIMIT = 40, 1.0, 20


def mapped(items: int, limit: int) -> str:
    return f"""\
schema_version: "1"
flow: {{name: concurrent_map}}
state:
  fields:
    docs:      {{type: "list[str]", required: true}}
    summaries: {{type: "list[str]", default: []}}
nodes:
  - id: summarize
    map: {{over: docs, as: doc, max_concurrency: {limit}}}
    prompt: "Summarize {{doc}}."
    outputs: [summaries]
edges:
  - {{from: START, to: summarize}}
  - {{from: summarize, to: END}}
config:
  llm: {{max_retries: 0}}
orchestration:
  inputs: {{docs: {json.dumps([f"doc {i}" for i in range(items)])}}}
"""


def client_threads() -> int:
    """The threads of this process that are not the loopback server's."""
    return sum(
        1
        for t in threading.enumerate()
        if t.name != "gemini-loopback" and not t.name.endswith("(process_request_thread)")
    )


class ThreadsAtEachCall:
    """The loopback server's answer: after ``DELAY_S``, the prompt echoed; notes the
    client's thread count as each call arrives."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, request: RecordedRequest) -> Reply:
        self.seen.append(client_threads())
        return Reply.text_reply(f"summary of {request.prompt_text}", delay_s=DELAY_S)


@pytest.fixture
def counting(gemini: GeminiLoopbackServer) -> Iterator[ThreadsAtEachCall]:
    answer = ThreadsAtEachCall()
    gemini.set_default(answer)
    yield answer


def test_forty_items_keep_twenty_calls_in_flight_on_a_few_threads(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer, counting: ThreadsAtEachCall
) -> None:
    # The first run imports, and opens the client's connections: asyncio resolves each new
    # connection's address on its thread pool, which keeps those threads for later use.
    run_workflow(load_workflow(write(tmp_path, mapped(ITEMS, LIMIT), "warm.yaml")))
    before = client_threads()
    result = run_workflow(load_workflow(write(tmp_path, mapped(ITEMS, LIMIT))))

    assert result.state["summaries"] == [f"summary of Summarize doc {i}." for i in range(ITEMS)]
    assert gemini.max_in_flight == LIMIT  # concurrent, and never more than the limit
    # 20 calls in flight, and as each call arrived the process ran fewer than 10 threads
    # more than before the run (5 measured: the event loop's pool, onto which aiohttp hands
    # each request's proxy and netrc look-ups for a moment, grows in a burst of requests):
    # no thread per call or per item.
    seen = counting.seen[ITEMS:]
    assert len(seen) == ITEMS
    assert max(seen) - before < LIMIT // 2, (before, seen)

    assert result.tracking is not None
    path = MlflowClient().download_artifacts(result.tracking.run_id, "cost_summary.json")
    calls = json.loads(Path(path).read_text())["calls"]
    assert sorted(c["item"] for c in calls) == list(range(ITEMS))
    drain_trace_export()
    trace = mlflow.get_trace(result.tracking.trace_id or "")
    items = [
        s.attributes["agents_pipelines.item_index"]
        for s in trace.data.spans
        if s.span_type == "CHAT_MODEL"
    ]
    assert sorted(items) == list(range(ITEMS))


class Stopped(BaseException):
    """What an orchestrator's stop raises in the run's thread (Dagster: on SIGTERM)."""


def test_a_stop_cancels_the_calls_in_flight_and_makes_no_more(
    tmp_path: Path, mlflow_uri: str, gemini: GeminiLoopbackServer
) -> None:
    gemini.set_default(lambda r: Reply.text_reply("summary", delay_s=2.0))

    def stop(signum: int, frame: FrameType | None) -> Any:
        raise Stopped

    previous = signal.signal(signal.SIGUSR1, stop)
    main = threading.get_ident()

    def stop_once_all_in_flight() -> None:
        wait_until(lambda: gemini.max_in_flight == 8, 30, "8 calls in flight")
        signal.pthread_kill(main, signal.SIGUSR1)

    stopper = threading.Thread(target=stop_once_all_in_flight, daemon=True)
    stopper.start()
    run = WorkflowRun(load_workflow(write(tmp_path, mapped(40, 8))))
    try:
        with pytest.raises(Stopped) as stopped:
            run.execute()
        made = len(gemini.requests)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stopper.join()
    assert 8 <= made < 40  # stopped while the first calls were in flight
    # The spend of a stop, as data: the calls it cut short count.
    assert run.ending is not None and run.ending.status == "stopped"
    assert run.ending.error is stopped.value
    assert run.ending.usage.llm_calls == made
    time.sleep(2.5)  # longer than a call: an item still running would have called by now
    assert len(gemini.requests) == made  # nothing was called after the stop
