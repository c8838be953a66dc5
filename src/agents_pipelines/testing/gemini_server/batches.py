"""The Batch API side: jobs, their scripted states, and the Files API that carries JSONL.

A job's life is a ``BatchScript``: the states it reports, one more per ``GET`` of the job
(the create answer shows the first). The default plays PENDING, RUNNING, SUCCEEDED. When a
job reaches SUCCEEDED its items are answered in order from the server's plan and default,
like calls: a planned ``Reply`` is an item's response, a planned ``Fault`` with a status is
the item's error (a per-item failure), so ``server.plan(...)`` scripts items as it scripts
calls. FAILED and EXPIRED jobs answer nothing; a cancel moves a running job to CANCELLED.

Wire shapes (google-genai 3, Gemini Developer API): a job is an Operation,
``{"name": "batches/ID", "metadata": {"state": "BATCH_STATE_...", "batchStats": {...},
"output": {...}}, "done": bool}``. Inline input is ``batch.inputConfig.requests.requests``,
each ``{"request": GenerateContentRequest, "metadata": {"key": ...}}``; inline output is
``metadata.output.inlinedResponses.inlinedResponses``, each ``{"response" | "error",
"metadata"}``. File input is ``batch.inputConfig.fileName`` naming an uploaded JSONL of
``{"key", "request"}`` lines; its output is ``metadata.output.responsesFile``, a JSONL of
``{"key", "response" | "error"}`` lines read back with ``files/ID:download``.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents_pipelines.testing.gemini_server.faults import Fault
from agents_pipelines.testing.gemini_server.replies import (
    RecordedRequest,
    Reply,
    default_reply,
    response_json,
)

BATCH_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED")
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})
# The real API takes at most 20 MB of inline requests; larger batches go through a file.
INLINE_LIMIT_BYTES = 20 * 1024 * 1024
_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"

AnswerFn = Callable[[RecordedRequest], "tuple[Fault | Reply, str]"]


class BatchApiError(Exception):
    """A request the Batch or Files API refuses: sent back as ``status`` in Google's shape."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BatchScript:
    """The states a job reports, in order: the create answer shows the first, and each
    ``GET`` of the job moves one further (the last one stays). A script that ends in a
    state that is not terminal is a job that never finishes (a time-out test)."""

    states: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED")
    error: str = "The batch job failed."  # the message of a FAILED or EXPIRED job
    # The polls (1 = the first GET of the job) answered 503 without moving the job on: a
    # poll that fails while the job runs on at Gemini.
    failed_polls: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        unknown = [s for s in self.states if s not in BATCH_STATES]
        if not self.states or unknown:
            raise ValueError(f"BatchScript.states takes states of {BATCH_STATES}, got {unknown}")
        if any(s in TERMINAL_STATES for s in self.states[:-1]):
            raise ValueError("only the last state of a BatchScript may be terminal")

    @classmethod
    def failing(cls, state: str = "FAILED", message: str = "") -> BatchScript:
        """A job that runs, then ends FAILED (or EXPIRED) with no results."""
        return cls(("PENDING", "RUNNING", state), error=message or cls.error)

    @classmethod
    def never_done(cls) -> BatchScript:
        """A job that stays RUNNING until it is cancelled."""
        return cls(("PENDING", "RUNNING"))


@dataclass(frozen=True)
class BatchRecord:
    """A snapshot of one job, as ``server.batch_jobs`` reports it to a test."""

    name: str
    model: str
    state: str
    keys: tuple[str, ...]
    source: str  # "inline" or "file"
    polls: int
    cancel_requests: int
    deleted: bool


@dataclass
class _Item:
    key: str
    request: RecordedRequest
    metadata: dict[str, Any] | None  # inline metadata, echoed back


@dataclass
class _Job:
    name: str
    model: str
    display_name: str
    items: list[_Item]
    source: str
    script: BatchScript
    created: str
    step: int = 0
    polls: int = 0
    cancel_requests: int = 0
    cancelled: bool = False
    deleted: bool = False
    results: list[dict[str, Any]] | None = None
    output_file: str | None = None
    ended: str | None = None

    @property
    def state(self) -> str:
        return "CANCELLED" if self.cancelled else self.script.states[self.step]


@dataclass
class _File:
    name: str
    mime_type: str
    data: bytearray = field(default_factory=bytearray)
    final: bool = False


class BatchStore:
    """The server's jobs and files, behind one lock (handler threads share it)."""

    def __init__(self, answer: AnswerFn) -> None:
        self._answer = answer
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._files: dict[str, _File] = {}
        self._scripts: list[BatchScript] = []
        self._ids = itertools.count(1)
        self.inline_limit_bytes = INLINE_LIMIT_BYTES

    # -- scripting and observation (the test's side) --------------------------------------

    def plan(self, scripts: tuple[BatchScript, ...]) -> None:
        with self._lock:
            self._scripts.extend(scripts)

    def records(self) -> list[BatchRecord]:
        with self._lock:
            return [_record(job) for job in self._jobs.values()]

    def add_finished(self, count: int) -> None:
        """``count`` jobs of other runs, already SUCCEEDED, with no items."""
        with self._lock:
            for _ in range(count):
                name = f"batches/loopback-{next(self._ids)}"
                job = _Job(
                    name, "gemini-2.5-flash", "another run", [], "inline", BatchScript(), _now()
                )
                job.step, job.results, job.ended = 2, [], job.created
                self._jobs[name] = job

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._files.clear()
            self._scripts.clear()

    # -- the Batch API ----------------------------------------------------------------------

    def create(
        self, model: str, body: dict[str, Any], headers: dict[str, str], raw_size: int
    ) -> dict[str, Any]:
        batch = _object(body.get("batch"))
        source = batch.get("inputConfig") or {}
        inline = (source.get("requests") or {}).get("requests")
        with self._lock:
            if inline is not None and raw_size > self.inline_limit_bytes:
                raise BatchApiError(
                    400,
                    f"Request payload size exceeds the limit: {self.inline_limit_bytes} bytes. "
                    "Send the requests in a file (inputConfig.fileName).",
                )
            name = f"batches/loopback-{next(self._ids)}"
            if inline is not None:
                items = [
                    _inline_item(i, entry, model, headers, name) for i, entry in enumerate(inline)
                ]
                kind = "inline"
            elif isinstance(source.get("fileName"), str):
                items = self._file_items(source["fileName"], model, headers, name)
                kind = "file"
            else:
                raise BatchApiError(400, "batch.inputConfig needs `requests` or `fileName`.")
            script = self._scripts.pop(0) if self._scripts else BatchScript()
            job = _Job(
                name, model, str(batch.get("displayName") or ""), items, kind, script, _now()
            )
            self._jobs[name] = job
        self._settle(job)
        return self._operation(job)

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            job.polls += 1
            if job.polls in job.script.failed_polls:
                raise BatchApiError(503, f"{job.name} is unavailable (a planned poll failure).")
            if not job.cancelled and job.step < len(job.script.states) - 1:
                job.step += 1
        self._settle(job)
        return self._operation(job)

    def page(self, page_size: int, page_token: str) -> dict[str, Any]:
        with self._lock:
            jobs = [job for job in self._jobs.values() if not job.deleted]
        start = int(page_token or 0)
        page = jobs[start : start + page_size]
        answer: dict[str, Any] = {"operations": [self._operation(job) for job in page]}
        if start + page_size < len(jobs):
            answer["nextPageToken"] = str(start + page_size)
        return answer

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._job(job_id)
            job.cancel_requests += 1
            if job.state not in TERMINAL_STATES:
                job.cancelled = True
                job.ended = _now()
        return {}

    def delete(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._job(job_id).deleted = True
        return {}

    # -- the Files API ----------------------------------------------------------------------

    def start_upload(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        """A resumable upload's first request: the file's id, for the upload URL."""
        declared = _object(body.get("file"))
        with self._lock:
            file_id = str(declared.get("name") or "").removeprefix("files/")
            file_id = file_id or f"loopback-upload-{next(self._ids)}"
            mime = headers.get("x-goog-upload-header-content-type", "application/octet-stream")
            self._files[f"files/{file_id}"] = _File(f"files/{file_id}", mime)
        return file_id

    def upload_chunk(
        self, file_id: str, offset: int, data: bytes, finalize: bool
    ) -> dict[str, Any]:
        with self._lock:
            upload = self._files.get(f"files/{file_id}")
            if upload is None or upload.final:
                raise BatchApiError(404, f"No upload in progress for files/{file_id}.")
            if offset != len(upload.data):
                raise BatchApiError(400, f"Upload offset {offset} != {len(upload.data)} received.")
            upload.data.extend(data)
            upload.final = finalize
            return {"file": _file_json(upload)}

    def download(self, file_id: str) -> bytes:
        with self._lock:
            stored = self._files.get(f"files/{file_id}")
            if stored is None or not stored.final:
                raise BatchApiError(404, f"File files/{file_id} was not found.")
            return bytes(stored.data)

    def file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            stored = self._files.get(f"files/{file_id}")
            if stored is None:
                raise BatchApiError(404, f"File files/{file_id} was not found.")
            return _file_json(stored)

    # -- internals ----------------------------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(f"batches/{job_id}")
        if job is None or job.deleted:
            raise BatchApiError(404, f"Batch batches/{job_id} was not found.")
        return job

    def _file_items(
        self, file_name: str, model: str, headers: dict[str, str], job: str
    ) -> list[_Item]:
        stored = self._files.get(file_name)
        if stored is None or not stored.final:
            raise BatchApiError(400, f"File {file_name} was not found or is not uploaded.")
        items = []
        for number, line in enumerate(stored.data.decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                request = entry["request"]
                key = str(entry["key"])
            except (ValueError, KeyError, TypeError):
                message = f"{file_name} line {number}: not a {{key, request}} object."
                raise BatchApiError(400, message) from None
            items.append(_Item(key, _recorded(model, request, headers, job), None))
        return items

    def _settle(self, job: _Job) -> None:
        """Answer the items once, when the job first shows SUCCEEDED (outside the lock: the
        answers come from the server's plan, which has its own)."""
        with self._lock:
            due = job.state == "SUCCEEDED" and job.results is None
            if due:
                job.results = []
            if job.state in TERMINAL_STATES and job.ended is None:
                job.ended = _now()
        if not due:
            return
        results = [self._result(job, item) for item in job.items]
        with self._lock:
            job.results = results
            if job.source == "file":
                out = _File(f"files/{job.name.split('/')[-1]}-responses", "application/jsonl")
                lines = [json.dumps({"key": r["metadata"]["key"], **_body(r)}) for r in results]
                out.data.extend(("\n".join(lines) + "\n").encode())
                out.final = True
                self._files[out.name] = out
                job.output_file = out.name

    def _result(self, job: _Job, item: _Item) -> dict[str, Any]:
        answer, response_id = self._answer(item.request)
        metadata = item.metadata if item.metadata is not None else {"key": item.key}
        if isinstance(answer, Fault) and answer.status:
            return {"error": answer.error_json(item.request.api_key)["error"], "metadata": metadata}
        reply = answer if isinstance(answer, Reply) else None
        if reply is None:  # a hang-only fault: nothing hangs in a batch, answer by default
            reply = default_reply(item.request)
        response = response_json(
            reply.parts(),
            model=job.model,
            response_id=response_id,
            usage=reply.usage,
            finished=True,
        )
        return {"response": response, "metadata": metadata}

    def _operation(self, job: _Job) -> dict[str, Any]:
        with self._lock:
            state = job.state
            metadata: dict[str, Any] = {
                "@type": _BATCH_TYPE,
                "model": f"models/{job.model}",
                "displayName": job.display_name,
                "state": f"BATCH_STATE_{state}",
                "createTime": job.created,
                "updateTime": job.ended or job.created,
                "batchStats": _stats(job),
                "name": job.name,
            }
            if job.ended is not None:
                metadata["endTime"] = job.ended
            if state == "SUCCEEDED" and job.results is not None:
                metadata["output"] = (
                    {"responsesFile": job.output_file}
                    if job.output_file
                    else {"inlinedResponses": {"inlinedResponses": list(job.results)}}
                )
            operation: dict[str, Any] = {
                "name": job.name,
                "metadata": metadata,
                "done": state in TERMINAL_STATES,
            }
            if state in ("FAILED", "EXPIRED"):
                operation["error"] = {
                    "code": 13 if state == "FAILED" else 4,
                    "message": job.script.error,
                }
            return operation


def _inline_item(index: int, entry: Any, model: str, headers: dict[str, str], job: str) -> _Item:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise BatchApiError(400, f"requests[{index}] needs a `request` object.")
    metadata = entry.get("metadata") if isinstance(entry.get("metadata"), dict) else None
    key = str((metadata or {}).get("key", index))
    return _Item(key, _recorded(model, entry["request"], headers, job), metadata)


def _recorded(
    model: str, request: dict[str, Any], headers: dict[str, str], job: str
) -> RecordedRequest:
    return RecordedRequest(model=model, path=f"/{job}", headers=headers, body=request, batch=job)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _body(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "metadata"}


def _stats(job: _Job) -> dict[str, str]:
    """``batchStats`` as the API sends it (int64 counts as strings)."""
    total = len(job.items)
    failed = sum(1 for r in job.results or [] if "error" in r)
    done = len(job.results or [])
    if job.state == "RUNNING":
        done = total // 2  # half-way: a poll has progress to report
    return {
        "requestCount": str(total),
        "successfulRequestCount": str(done - failed),
        "failedRequestCount": str(failed),
        "pendingRequestCount": str(total - done),
    }


def _file_json(stored: _File) -> dict[str, Any]:
    generated = stored.name.endswith("-responses")
    answer = {
        "name": stored.name,
        "mimeType": stored.mime_type,
        "sizeBytes": str(len(stored.data)),
        "state": "ACTIVE" if stored.final else "PROCESSING",
        "source": "GENERATED" if generated else "UPLOADED",
    }
    if generated:
        answer["downloadUri"] = f"{stored.name}:download"
    return answer


def _record(job: _Job) -> BatchRecord:
    return BatchRecord(
        name=job.name,
        model=job.model,
        state=job.state,
        keys=tuple(item.key for item in job.items),
        source=job.source,
        polls=job.polls,
        cancel_requests=job.cancel_requests,
        deleted=job.deleted,
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
