"""Gemini Batch Mode: a node's calls sent as one job of Gemini's Batch API, at the batch price.

``BatchGemini`` is a ChatGoogleGenerativeAI whose calls do not go to ``generateContent``:
each call's request (the very one an interactive call would send) joins the node's next
job, and the call returns when the job has answered it. So every call is still a LangChain
call with its callbacks: the ledger records its usage (from the response's usageMetadata),
the trace gets its LLM span, and a map node's retry policy and ``on_item_error`` apply to
each item as they do interactively.

- Gathering: the calls of one node in one run that arrive within ``_GATHER_S`` of each
  other go in one job (a map node's items all start in the same super-step; an item
  retried after a per-item error goes in a follow-up job). Requests past the inline limit
  go through the Files API as JSONL.
- Before a new job is submitted, its calls' summed estimate (prompts sized by characters
  / 4, at the batch price) is checked against the budget and the spend limits: a job that
  would pass them is not submitted (the run's ``check_job`` hook, llm.batch_hooks).
- Polling: every ``poll_s``, with the state and done/total logged, and in the run's log
  (Dagster's, through the run's ``progress`` hook). Past ``timeout_s`` the
  job is cancelled and its calls fail. A cancelled call (a stop: SIGTERM, Ctrl-C, Dagster's
  Terminate) cancels its job.
- Never pay twice: a job's key (and display name) is a digest of the run's checkpoint
  thread, the node and its requests, and a submitted job's name is checkpointed under that
  key (graph.batch_job_names). A retry, a re-execution or a resume of the same run asks
  the same requests, reads the job's name, and attaches to it rather than submitting
  another. A run without checkpoints looks for the key among the project's newest jobs.
- A range run (orchestration.partition_range): the calls of a node in the partitions
  running at once go in one job. A partition's gathered calls wait until every running
  partition waits on a batch call or has ended (llm.batch_hooks.SharedJobs); each
  partition's requests carry keys of its own (a digest of its partition, thread and
  requests, then the index), its checkpoint records the shared job's name under its own
  key, and its budget and spend limits judge its share before the job is submitted. A
  retry in which each partition finds its job attaches to it; partitions that find none
  make a new job together.
- Per-item errors are raised as google-genai ``APIError``s with the item's code, so the
  node's RetryPolicy retries the transient ones, as it would an interactive call.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from google.genai import errors as genai_errors
from google.genai import types
from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langchain_google_genai import ChatGoogleGenerativeAI
from pydantic import PrivateAttr

from agents_pipelines._compat import genai as compat
from agents_pipelines.errors import WorkflowRunError
from agents_pipelines.llm.batch_hooks import BatchHooks, current_hooks
from agents_pipelines.usage.records import BATCH_JOB, NODE_KEY, TIER_KEY

logger = logging.getLogger(__name__)

BATCH_TIER = "batch"
# Gemini takes up to 20 MB of inline requests; past that, a JSONL file. Kept below it, as
# the request's JSON envelope adds to the requests' own size.
INLINE_LIMIT_BYTES = 19 * 1024 * 1024
# Calls of one node that arrive within this many seconds of the last go in one job: a map
# node's items arrive within milliseconds of each other.
_GATHER_S = 0.2
# Jobs searched for one to attach to (newest first).
_ATTACH_SEARCH = 200
_DEAD_STATES = frozenset({"JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
_DONE_STATES = _DEAD_STATES | {"JOB_STATE_SUCCEEDED"}
# A run's checkpoint thread, as LangGraph copies it into the calls' metadata.
THREAD_KEY = "thread_id"


class BatchJobError(WorkflowRunError):
    """A batch job that ended without answering (failed, expired, cancelled, timed out)."""


@dataclass
class JobReport:
    """One job as the materialization reports it (``batch_jobs``)."""

    name: str
    state: str = "JOB_STATE_PENDING"
    requests: int = 0
    failures: int = 0
    attached: bool = False  # an existing job of an earlier attempt, not a new one

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.removeprefix("JOB_STATE_"),
            "requests": self.requests,
            "failures": self.failures,
            "attached": self.attached,
        }


@dataclass
class _Call:
    request: dict[str, Any]
    answer: Any  # an asyncio Future of a GenerateContentResponse (_Settled on the sync path)
    hooks: BatchHooks = field(default_factory=BatchHooks)  # its run's
    run_id: Any = None  # its LangChain run id (the ledger's key for it)
    report: JobReport | None = None  # the job that answers it, once there is one
    thread: str = ""  # its run's checkpoint thread


@dataclass
class _Member:
    """One run's calls in a job: alone, or one partition's share of a range's job."""

    hooks: BatchHooks
    thread: str
    calls: list[_Call]
    display: str  # the key its checkpoint records the job's name under
    prefix: str  # of its requests' keys in the job
    earlier: str | None = None  # the job an earlier attempt submitted for it


@dataclass
class _Gathering:
    calls: list[_Call] = field(default_factory=list)
    flush: asyncio.TimerHandle | None = None


class BatchGemini(ChatGoogleGenerativeAI):
    """ChatGoogleGenerativeAI that answers each call from a Batch API job (see module)."""

    poll_s: float = 30.0
    batch_timeout_s: float = 86_400.0

    _gatherings: dict[tuple[int, str, str], _Gathering] = PrivateAttr(default_factory=dict)

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        """LangChain's ls_ parameters, which go into each call's callback metadata, with the
        tier: the ledger and the trace price the call at the batch price."""
        params = super()._get_ls_params(stop=stop, **kwargs)
        params[TIER_KEY] = BATCH_TIER  # type: ignore[literal-required]
        return params

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = compat.prepare_request(self, messages, stop=stop, **kwargs)
        future = asyncio.get_running_loop().create_future()
        scope = _scope(run_manager)
        call = _Call(request, future, current_hooks(), _run_id(run_manager), thread=scope[1])
        self._gather(call, scope)
        try:
            try:
                response = await call.answer
            except asyncio.CancelledError:
                raise  # a stop: the partition does not go on
            except BaseException:
                await _back_in_turn(call)  # a failed item: its partition goes on
                raise
            await _back_in_turn(call)
        finally:
            if call.report is not None and run_manager is not None:
                events = AsyncCallbackManager(
                    run_manager.handlers, parent_run_id=run_manager.run_id
                )
                await events.on_custom_event(BATCH_JOB, call.report.as_dict())
        return _result(response)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """A call on LangGraph's sync path (a plain node): a job of one, polled here."""
        request = compat.prepare_request(self, messages, stop=stop, **kwargs)
        node, thread = _scope(run_manager)
        call = _Call(request, _Settled(), current_hooks(), _run_id(run_manager), thread=thread)
        try:
            asyncio.run(self._run_job([call], node, thread, sync=True))
        finally:
            if call.report is not None and run_manager is not None:
                events = CallbackManager(run_manager.handlers, parent_run_id=run_manager.run_id)
                events.on_custom_event(BATCH_JOB, call.report.as_dict())
        return _result(call.answer.value())

    # -- gathering ----------------------------------------------------------------------------

    def _gather(self, call: _Call, scope: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        shared = call.hooks.shared
        key = (id(loop), *scope)
        if shared is not None:  # the partitions' runs have models of their own: the
            # range's gatherings are the range's (on the process's loop: graph.event_loop)
            key = (id(loop), scope[0], f"range {self.model}")
        gathering = self._gatherings_of(call).setdefault(key, _Gathering())
        gathering.calls.append(call)
        if gathering.flush is not None:
            gathering.flush.cancel()
        gathering.flush = loop.call_later(_GATHER_S, self._flush, key, scope, call)
        if shared is not None:
            member = call.hooks.member
            shared.waiting(member, 1)
            call.answer.add_done_callback(lambda _: shared.waiting(member, -1))

    def _gatherings_of(self, call: _Call) -> dict[tuple[int, str, str], _Gathering]:
        shared = call.hooks.shared
        return self._gatherings if shared is None else shared.gatherings

    def _flush(self, key: tuple[int, str, str], scope: tuple[str, str], call: _Call) -> None:
        gatherings = self._gatherings_of(call)
        gathering = gatherings.get(key)
        if gathering is None or not gathering.calls:
            return
        gathering.flush = None
        shared = call.hooks.shared
        if shared is not None and not shared.ready():  # another partition may still come
            loop = asyncio.get_running_loop()
            shared.when_changed(lambda: _call_soon(loop, self._recheck, key, scope, call))
            return
        del gatherings[key]
        calls = [call for call in gathering.calls if not call.answer.done()]  # not stopped
        job = asyncio.ensure_future(self._run_job(calls, *scope, sync=False))
        for call in calls:  # a cancelled call (a stop) cancels the job
            call.answer.add_done_callback(lambda answer: answer.cancelled() and job.cancel())

    def _recheck(self, key: tuple[int, str, str], scope: tuple[str, str], call: _Call) -> None:
        """A range's partitions changed: flush a waiting gathering if all have come."""
        gathering = self._gatherings_of(call).get(key)
        if gathering is not None and gathering.flush is None:
            self._flush(key, scope, call)

    # -- one job ------------------------------------------------------------------------------

    async def _run_job(self, calls: list[_Call], node: str, thread: str, *, sync: bool) -> None:
        if not calls:
            return
        try:
            client = self._client_of(sync)
            jobs = await _jobs_of(client, _members(self.model, node, thread, calls))
        except BaseException as exc:
            _fail(calls, exc)
            if not isinstance(exc, Exception):
                raise
            return
        await asyncio.gather(
            *(self._one_job(client, name, members, node) for name, members in jobs.items())
        )

    async def _one_job(
        self, client: _Client, name: str | None, members: list[_Member], node: str
    ) -> None:
        calls = [call for member in members for call in member.calls]
        try:
            report = await self._submit_or_attach(client, name, members, node)
            try:
                responses = await self._wait(client, report, len(calls), members[0].hooks)
            finally:
                for call in calls:
                    assert call.report is not None
                    call.report.state = report.state
            for member in members:
                _settle(member, responses)
        except BaseException as exc:
            _fail(calls, exc)
            if not isinstance(exc, Exception):
                raise

    def _client_of(self, sync: bool) -> _Client:
        assert self.client is not None
        return _Client(self.client, sync)

    async def _submit_or_attach(
        self, client: _Client, name: str | None, members: list[_Member], node: str
    ) -> JobReport:
        total = sum(len(member.calls) for member in members)
        if name is not None:
            report = JobReport(name, requests=total, attached=True)
        else:
            display = members[0].display if len(members) == 1 else _range_display(node, members)
            src = await self._source(client, members)
            job = await client.create(self.model, src, display)
            assert job.name is not None
            report = JobReport(job.name, state=_state(job), requests=total)
            for member in members:  # each partition's checkpoint: the job and its own key
                if member.hooks.job_names is not None:
                    member.hooks.job_names.put(member.display, job.name)
        for member in members:  # each run reports its own share of the job
            share = JobReport(report.name, report.state, len(member.calls), 0, report.attached)
            for call in member.calls:
                call.report = share
        how = "attached to (submitted by an earlier attempt)" if report.attached else "submitted"
        shared = f" from {len(members)} partitions" if len(members) > 1 else ""
        _progress(
            members[0].hooks,
            f"Batch job {report.name} {how}: node {node}, {total} request(s){shared}, "
            f"{report.state.removeprefix('JOB_STATE_')}",
        )
        return report

    async def _source(self, client: _Client, members: list[_Member]) -> Any:
        inlined = [
            types.InlinedRequest(
                contents=call.request["contents"],
                config=_batch_config(call.request.get("config")),
                metadata={"key": f"{member.prefix}{index}"},
            )
            for member in members
            for index, call in enumerate(member.calls)
        ]
        size = sum(len(r.model_dump_json(exclude_none=True)) for r in inlined)
        if size <= INLINE_LIMIT_BYTES:
            return inlined
        return await client.upload(inlined)

    async def _wait(
        self, client: _Client, report: JobReport, total: int, hooks: BatchHooks
    ) -> dict[str, Any]:
        started = time.monotonic()
        cancelled_by_us = False
        try:
            while True:
                job, stats = await client.get(report.name)
                report.state = _state(job)
                done = stats.get("successfulRequestCount", 0) + stats.get("failedRequestCount", 0)
                state = report.state.removeprefix("JOB_STATE_")
                _progress(hooks, f"Batch job {report.name}: {state}, {done}/{total} done")
                if report.state in _DONE_STATES:
                    break
                if time.monotonic() - started > self.batch_timeout_s:
                    cancelled_by_us = True
                    await client.cancel(report.name)
                    report.state = "JOB_STATE_CANCELLED"
                    raise BatchJobError(
                        f"Batch job {report.name} did not finish within timeout_s "
                        f"({self.batch_timeout_s:g} s): it was cancelled. Fix: raise "
                        "llm.batch.timeout_s, or call the node interactively (batch: false)."
                    )
                await client.sleep(self.poll_s)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            if not cancelled_by_us:
                await asyncio.shield(client.cancel(report.name))
                report.state = "JOB_STATE_CANCELLED"
            raise
        if report.state != "JOB_STATE_SUCCEEDED":
            raise BatchJobError(
                f"Batch job {report.name} ended {report.state.removeprefix('JOB_STATE_')} "
                "without answers. Fix: run again (a new job is submitted), or call the node "
                "interactively (batch: false)."
            )
        return await client.responses(job)


class _Settled:
    """A future for the sync path, where no event loop outlives the job."""

    def __init__(self) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def set_result(self, value: Any) -> None:
        self._value, self._done = value, True

    def set_exception(self, error: BaseException) -> None:
        self._error, self._done = error, True

    def cancel(self) -> None:
        self._error, self._done = KeyboardInterrupt(), True

    def value(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _Client:
    """The Batch and Files calls of a google-genai Client, sync or async behind one face."""

    def __init__(self, client: Any, sync: bool):
        self._client, self._sync = client, sync

    async def create(self, model: str, src: Any, display: str) -> types.BatchJob:
        config = {"display_name": display}
        if self._sync:
            return self._client.batches.create(model=model, src=src, config=config)
        return await self._client.aio.batches.create(model=model, src=src, config=config)

    async def get(self, name: str) -> tuple[types.BatchJob, dict[str, int]]:
        return await compat.get_job_with_stats(self._client, name, sync=self._sync)

    async def cancel(self, name: str) -> None:
        if self._sync:
            self._client.batches.cancel(name=name)
        else:
            await self._client.aio.batches.cancel(name=name)

    async def sleep(self, seconds: float) -> None:
        if self._sync:
            time.sleep(seconds)  # the sync path's thread has nothing else to do
        else:
            await asyncio.sleep(seconds)

    async def find(self, display: str) -> str | None:
        """The name of a live or finished job of an earlier attempt with this display name."""
        config = {"page_size": 100}
        if self._sync:
            jobs: list[types.BatchJob] = []
            for job in self._client.batches.list(config=config):
                jobs.append(job)
                if len(jobs) >= _ATTACH_SEARCH:
                    break
        else:
            jobs = []
            async for job in await self._client.aio.batches.list(config=config):
                jobs.append(job)
                if len(jobs) >= _ATTACH_SEARCH:
                    break
        for job in jobs:
            if job.display_name == display and _state(job) not in _DEAD_STATES:
                return job.name
        return None

    async def upload(self, requests: list[types.InlinedRequest]) -> str:
        """The requests as a JSONL file of the Files API: ``{"key", "request"}`` lines."""
        lines = [
            json.dumps({"key": str(i), "request": compat.jsonl_request(self._client, request)})
            for i, request in enumerate(requests)
        ]
        data = io.BytesIO(("\n".join(lines) + "\n").encode())
        config = {"mime_type": "application/jsonl", "display_name": "agents-pipelines batch"}
        if self._sync:
            uploaded = self._client.files.upload(file=data, config=config)
        else:
            uploaded = await self._client.aio.files.upload(file=data, config=config)
        assert uploaded.name is not None
        name: str = uploaded.name
        return name

    async def download(self, name: str) -> bytes:
        if self._sync:
            data: bytes = self._client.files.download(file=name)
        else:
            data = await self._client.aio.files.download(file=name)
        return data

    async def responses(self, job: types.BatchJob) -> dict[str, Any]:
        """Each answer by its key: a GenerateContentResponse, or the item's error dict."""
        dest = job.dest
        if dest is not None and dest.inlined_responses is not None:
            return {
                str((r.metadata or {}).get("key")): r.response if r.error is None else r.error
                for r in dest.inlined_responses
            }
        if dest is None or dest.file_name is None:
            return {}
        data = await self.download(dest.file_name)
        answers: dict[str, Any] = {}
        for line in data.decode().splitlines():
            if line.strip():
                entry = json.loads(line)
                response = entry.get("response")
                answers[str(entry.get("key"))] = (
                    compat.response_from_json(response)
                    if response is not None
                    else types.JobError(**_error_fields(entry.get("error") or {}))
                )
        return answers


def _members(model: str, node: str, thread: str, calls: list[_Call]) -> list[_Member]:
    """The calls by run: one member, or in a range each partition's share."""
    if calls[0].hooks.shared is None:
        display = _display_name(model, node, thread, [c.request for c in calls])
        return [_Member(calls[0].hooks, thread, calls, display, "")]
    by_run: dict[str, list[_Call]] = {}
    for call in calls:
        by_run.setdefault(call.hooks.member, []).append(call)
    members = []
    for key, own in by_run.items():
        display = _display_name(model, node, own[0].thread, [c.request for c in own])
        prefix = hashlib.sha256(f"{key}\n{display}".encode()).hexdigest()[:12] + "-"
        members.append(_Member(own[0].hooks, own[0].thread, own, display, prefix))
    return members


async def _jobs_of(client: _Client, members: list[_Member]) -> dict[str | None, list[_Member]]:
    """The members by the job that answers them: the one an earlier attempt submitted for
    them, or (None) a new one, whose members' shares each passed their budget check."""
    jobs: dict[str | None, list[_Member]] = {}
    for member in members:
        member.earlier = await _earlier_job(client, member.hooks, member.display, member.thread)
        if member.earlier is None and member.hooks.check_job is not None:
            try:  # raises: nothing is submitted for this run, nothing paid
                member.hooks.check_job([call.run_id for call in member.calls])
            except Exception as exc:
                if len(members) == 1:
                    raise
                _fail(member.calls, exc)
                continue
        jobs.setdefault(member.earlier, []).append(member)
    return jobs


def _fail(calls: list[_Call], exc: BaseException) -> None:
    for call in calls:
        if not call.answer.done():
            if isinstance(exc, asyncio.CancelledError):
                call.answer.cancel()
            else:  # one error object per call: each item adds its own notes
                call.answer.set_exception(copy.copy(exc))


def _settle(member: _Member, responses: dict[str, Any]) -> None:
    for index, call in enumerate(member.calls):
        if call.answer.done():
            continue
        assert call.report is not None
        answer = responses.get(f"{member.prefix}{index}")
        if isinstance(answer, types.GenerateContentResponse):
            call.answer.set_result(answer)
            continue
        call.report.failures += 1
        call.answer.set_exception(_item_error(answer, call.report.name, index))


async def _back_in_turn(call: _Call) -> None:
    """In a range run, the call's partition takes a slot again (SharedJobs.resume) before
    it goes on: it gave its slot up while its calls waited on the job."""
    if call.hooks.shared is not None:
        await call.hooks.shared.resume(call.hooks.member)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nothing waits on it any more
        loop.call_soon_threadsafe(callback, *args)


def _range_display(node: str, members: list[_Member]) -> str:
    digest = hashlib.sha256("\n".join(member.display for member in members).encode())
    return f"agents-pipelines {node.strip('_')} range {digest.hexdigest()[:24]}"


def _item_error(error: Any, job: str, index: int) -> Exception:
    if error is None:
        return BatchJobError(f"Batch job {job} returned no answer for request {index}.")
    code = int(getattr(error, "code", None) or 500)
    message = str(getattr(error, "message", None) or "the batch item failed")
    body = {"error": {"code": code, "message": f"{message} (batch job {job})"}}
    if code >= 500:
        return genai_errors.ServerError(code, body)
    return genai_errors.ClientError(code, body)


async def _earlier_job(client: _Client, hooks: BatchHooks, display: str, thread: str) -> str | None:
    """The live or finished job an earlier attempt of this run submitted for these
    requests: by its checkpointed name, or else (no checkpoints) by its display name."""
    if hooks.job_names is None:
        return await client.find(display) if thread else None
    name = hooks.job_names.get(display)
    if name is None:
        return None
    try:
        job, _ = await client.get(name)
    except genai_errors.ClientError:  # deleted since (404): submit anew
        return None
    return name if _state(job) not in _DEAD_STATES else None


def _progress(hooks: BatchHooks, line: str) -> None:
    logger.info(line)
    if hooks.progress is not None:
        hooks.progress(line)


def _run_id(run_manager: Any) -> Any:
    return getattr(run_manager, "run_id", None)


def _result(response: types.GenerateContentResponse) -> ChatResult:
    return compat.response_to_result(response)


def _scope(run_manager: Any) -> tuple[str, str]:
    metadata = getattr(run_manager, "metadata", None) or {}
    node = str(metadata.get(NODE_KEY) or metadata.get("langgraph_node") or "")
    return node, str(metadata.get(THREAD_KEY) or "")


def _display_name(model: str, node: str, thread: str, requests: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([model, node, thread]).encode())
    for request in requests:
        digest.update(json.dumps(_plain(request), sort_keys=True, default=str).encode())
    return f"agents-pipelines {node.strip('_')} {digest.hexdigest()[:24]}"


def _plain(request: dict[str, Any]) -> Any:
    contents = [
        c.model_dump(exclude_none=True) if hasattr(c, "model_dump") else c
        for c in request["contents"]
    ]
    config = _batch_config(request.get("config"))
    return {
        "contents": contents,
        "config": None if config is None else config.model_dump(exclude_none=True),
    }


def _batch_config(config: Any) -> types.GenerateContentConfig | None:
    """The call's config without the per-request HTTP options (a batch has none)."""
    if config is None:
        return None
    if isinstance(config, dict):
        config = types.GenerateContentConfig(**config)
    return config.model_copy(update={"http_options": None})


def _error_fields(error: dict[str, Any]) -> dict[str, Any]:
    return {"code": error.get("code"), "message": error.get("message")}


def _state(job: types.BatchJob) -> str:
    return str(job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED")
