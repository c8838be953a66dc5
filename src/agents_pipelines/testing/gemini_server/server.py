"""The HTTP side: ``GeminiLoopbackServer``, its request handler and its answer queue."""

from __future__ import annotations

import collections
import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agents_pipelines.testing.gemini_server.batches import (
    BatchApiError,
    BatchRecord,
    BatchScript,
    BatchStore,
)
from agents_pipelines.testing.gemini_server.faults import Fault, error_body
from agents_pipelines.testing.gemini_server.replies import (
    RecordedRequest,
    Reply,
    count_tokens,
    default_reply,
    response_json,
    stream_chunks,
)

# /{api_version}/models/{model}:{method}; the SDK lets callers pick the api version.
_ROUTE = re.compile(
    r"^/(?P<version>v1beta|v1alpha|v1)/models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent|countTokens|batchGenerateContent)$"
)
# The Batch and Files APIs (batches.py): a job, its cancel, a file, its download, an upload.
_BATCH = re.compile(r"^/(?:v1beta|v1alpha|v1)/batches/(?P<id>[^/:]+)(?P<cancel>:cancel)?$")
_BATCHES = re.compile(r"^/(?:v1beta|v1alpha|v1)/batches$")
_FILE = re.compile(r"^/(?:v1beta|v1alpha|v1)/files/(?P<id>[^/:]+)(?P<download>:download)?$")
_UPLOAD = re.compile(r"^/upload/(?:v1beta|v1alpha|v1)/files$")


PlanItem = Fault | Reply
DefaultFn = Callable[[RecordedRequest], PlanItem]


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that never joins handler threads (a hang must not block stop)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: GeminiLoopbackServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the owning GeminiLoopbackServer."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, like the real endpoint; needs Content-Length
    server_version = "GeminiLoopback/1.0"
    timeout = 60  # idle keep-alive connections eventually close on their own

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, *args: Any) -> None:
        """Silence access logs: tests stay quiet and the API key is never written out."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        store = self.server.owner._batches
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if (job := _BATCH.match(url.path)) and not job["cancel"]:
            self._batch_call(lambda: store.get(job["id"]))
        elif _BATCHES.match(url.path):
            size = int(query.get("pageSize") or 50)
            self._batch_call(lambda: store.page(size, query.get("pageToken", "")))
        elif (file := _FILE.match(url.path)) and file["download"]:
            try:
                data = store.download(file["id"])
            except BatchApiError as exc:
                self._send_json(exc.status, error_body(exc.status, str(exc)))
                return
            self._send_bytes(200, data, "application/octet-stream")
        elif file:
            self._batch_call(lambda: store.file(file["id"]))
        else:
            self._send_json(404, error_body(404, f"Method not found: GET {self.path}"))

    def do_DELETE(self) -> None:
        job = _BATCH.match(urlsplit(self.path).path)
        if job is None or job["cancel"]:
            self._send_json(404, error_body(404, f"Method not found: DELETE {self.path}"))
            return
        self._batch_call(lambda: self.server.owner._batches.delete(job["id"]))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if _UPLOAD.match(url.path):
            self._upload(url.query, raw)
            return
        if (job := _BATCH.match(url.path)) and job["cancel"]:
            self._batch_call(lambda: self.server.owner._batches.cancel(job["id"]))
            return
        route = _ROUTE.match(url.path)
        if route is None:
            self._send_json(404, error_body(404, f"Method not found: POST {url.path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, error_body(400, "Invalid JSON payload received."))
            return
        if not isinstance(body, dict):
            self._send_json(400, error_body(400, "Request body must be a JSON object."))
            return
        request = RecordedRequest(
            model=route["model"],
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            stream=route["method"] == "streamGenerateContent",
        )
        if route["method"] == "countTokens":
            self._count_tokens(request)
            return
        if route["method"] == "batchGenerateContent":
            store = self.server.owner._batches
            self._batch_call(lambda: store.create(request.model, body, request.headers, len(raw)))
            return
        sse = parse_qs(url.query).get("alt") == ["sse"]
        self._answer(request, sse=sse)

    def _batch_call(self, call: Callable[[], Any]) -> None:
        """Answer a Batch or Files API request with ``call()``'s JSON, or its refusal."""
        try:
            payload = call()
        except BatchApiError as exc:
            self._send_json(exc.status, error_body(exc.status, str(exc)))
            return
        self._send_json(200, payload)

    def _upload(self, query: str, raw: bytes) -> None:
        """The resumable upload: ``start`` hands out the upload URL, then chunks follow,
        the last with ``finalize`` (google-genai sends one chunk per 8 MB)."""
        store = self.server.owner._batches
        command = self.headers.get("X-Goog-Upload-Command", "")
        if command == "start":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send_json(400, error_body(400, "Invalid JSON payload received."))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            file_id = store.start_upload(body if isinstance(body, dict) else {}, headers)
            url = f"{self.server.owner.base_url}/upload/v1beta/files?upload_id={file_id}"
            self._send_json(200, {}, {"x-goog-upload-url": url, "x-goog-upload-status": "active"})
            return
        file_id = parse_qs(query).get("upload_id", [""])[-1]
        offset = int(self.headers.get("X-Goog-Upload-Offset") or 0)
        finalize = "finalize" in command
        try:
            answer = store.upload_chunk(file_id, offset, raw, finalize)
        except BatchApiError as exc:
            self._send_json(exc.status, error_body(exc.status, str(exc)))
            return
        status = "final" if finalize else "active"
        self._send_json(200, answer, {"x-goog-upload-status": status})

    def _count_tokens(self, request: RecordedRequest) -> None:
        """Free and never faulted: recorded apart from the calls, answered at once."""
        self.server.owner._record_count(request)
        self._send_json(200, {"totalTokens": count_tokens(request.prompt_text)})

    def _answer(self, request: RecordedRequest, *, sse: bool) -> None:
        owner = self.server.owner
        owner._enter()
        try:
            self._answer_in_flight(request, sse=sse)
        finally:
            owner._leave()

    def _answer_in_flight(self, request: RecordedRequest, *, sse: bool) -> None:
        owner = self.server.owner
        item, response_id = owner._take(request)
        reply = self._serve_fault(item, request) if isinstance(item, Fault) else item
        if reply is None:
            return
        if not owner._sleep(reply.delay_s):
            self.close_connection = True  # stopped mid-delay: drop without answering
            return
        tier = reply.served_tier or request.service_tier
        if request.stream:
            self._send_stream(reply, request.model, response_id, tier, sse=sse)
            return
        payload = response_json(
            reply.parts(),
            model=request.model,
            response_id=response_id,
            usage=reply.usage,
            finished=True,
            tier=tier,
        )
        self._send_json(200, payload)

    def _serve_fault(self, fault: Fault, request: RecordedRequest) -> Reply | None:
        """Hang, then send the error; a status-0 fault instead returns the Reply to send."""
        owner = self.server.owner
        if not owner._sleep(fault.hang_s):
            self.close_connection = True  # stopped mid-hang: drop without answering
            return None
        follow: PlanItem = fault
        if not fault.status:
            follow = owner._default_for(request)
            if isinstance(follow, Fault) and not follow.status:  # never hang twice
                follow = owner._default_for(request, builtin=True)
        if isinstance(follow, Fault):
            body = follow.error_json(request.api_key)
            self._send_json(follow.status, body, follow.headers())
            return None
        return follow

    def _send_stream(
        self, reply: Reply, model: str, response_id: str, tier: str, *, sse: bool
    ) -> None:
        chunks = stream_chunks(reply, model=model, response_id=response_id, tier=tier)
        if sse:
            data = "".join(f"data: {json.dumps(c)}\r\n\r\n" for c in chunks).encode()
            self._send_bytes(200, data, "text/event-stream")
        else:  # without alt=sse the API streams one JSON array
            self._send_bytes(200, json.dumps(chunks).encode(), "application/json")

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            # The client gave up (timeout) and closed the socket; nothing left to do.
            self.close_connection = True


class GeminiLoopbackServer:
    """A Gemini-compatible HTTP server on 127.0.0.1 with a scripted answer queue.

    Thread-safe. Use as a context manager or call ``start()``/``stop()``; a stopped
    server cannot be restarted (make a new one).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: collections.deque[PlanItem] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._count_requests: list[RecordedRequest] = []
        self._default: DefaultFn | None = None
        self._fault_count = 0
        self._reply_count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._batches = BatchStore(self._take)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> GeminiLoopbackServer:
        """Bind an ephemeral loopback port and serve from a daemon thread."""
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("GeminiLoopbackServer can only be started once")
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits at most one poll
            name="gemini-loopback",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; returns promptly even while requests are hanging."""
        if self._stopping.is_set():
            return
        self._stopping.set()  # wakes every hang/delay, which then drop their request
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # Unblocks handler threads parked on idle keep-alive reads.
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> GeminiLoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: pass as ``base_url`` / ``GOOGLE_GEMINI_BASE_URL``."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_port}"

    # -- scripting ----------------------------------------------------------------------

    def plan(self, *items: Fault | Reply) -> None:
        """Queue answers (FIFO): each incoming request consumes the next item."""
        for item in items:
            if not isinstance(item, Fault | Reply):
                raise TypeError(f"plan() takes Fault or Reply, got {type(item).__name__}")
        with self._lock:
            self._plan.extend(items)

    def set_default(self, fn: Callable[[RecordedRequest], Reply | Fault] | None) -> None:
        """Answer with ``fn(request)`` when the plan is empty (``None`` restores built-in).

        If ``fn`` raises, the request gets a 500 INTERNAL naming the exception.
        """
        with self._lock:
            self._default = fn

    def plan_batches(self, *scripts: BatchScript) -> None:
        """Queue how the next batch jobs play out (FIFO; unplanned jobs play
        PENDING, RUNNING, SUCCEEDED). Their items' answers come from ``plan``."""
        for script in scripts:
            if not isinstance(script, BatchScript):
                raise TypeError(f"plan_batches() takes BatchScript, got {type(script).__name__}")
        self._batches.plan(scripts)

    def add_finished_batch_jobs(self, count: int) -> None:
        """Jobs of other runs, already finished, listed beside the test's own: a busy
        project, whose job list no longer shows a run's job among the newest few hundred."""
        self._batches.add_finished(count)

    @property
    def batch_jobs(self) -> list[BatchRecord]:
        """Snapshot of the batch jobs created so far, in creation order."""
        return self._batches.records()

    @property
    def inline_batch_limit_bytes(self) -> int:
        """The largest inline batch request accepted (the real API's 20 MB by default)."""
        return self._batches.inline_limit_bytes

    @inline_batch_limit_bytes.setter
    def inline_batch_limit_bytes(self, value: int) -> None:
        self._batches.inline_limit_bytes = value

    def reset(self) -> None:
        """Forget the plan, the recorded requests, the counters, any custom default and the
        batch jobs and files."""
        self._batches.reset()
        with self._lock:
            self._plan.clear()
            self._requests.clear()
            self._count_requests.clear()
            self._default = None
            self._fault_count = self._reply_count = 0
            self._max_in_flight = self._in_flight

    # -- observation --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def count_requests(self) -> list[RecordedRequest]:
        """The countTokens requests received so far, in arrival order (not in ``requests``:
        they cost nothing and consume no planned answer)."""
        with self._lock:
            return list(self._count_requests)

    @property
    def pending(self) -> int:
        """Planned items not consumed yet."""
        with self._lock:
            return len(self._plan)

    @property
    def fault_count(self) -> int:
        """Requests answered with a Fault, planned or from the default (hangs included)."""
        with self._lock:
            return self._fault_count

    @property
    def reply_count(self) -> int:
        """Requests answered with a Reply (planned or default)."""
        with self._lock:
            return self._reply_count

    @property
    def max_in_flight(self) -> int:
        """The most requests the server has been answering at once (delays and hangs
        included): a client's concurrency, as the server sees it."""
        with self._lock:
            return self._max_in_flight

    # -- used by the handler --------------------------------------------------------------

    def _record_count(self, request: RecordedRequest) -> None:
        with self._lock:
            self._count_requests.append(request)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _take(self, request: RecordedRequest) -> tuple[PlanItem, str]:
        """Record ``request`` and choose its answer atomically, so order matches the plan."""
        with self._lock:
            self._requests.append(request)
            response_id = f"loopback-{len(self._requests)}"
            planned = self._plan.popleft() if self._plan else None
        item = planned if planned is not None else self._default_for(request)
        with self._lock:
            if isinstance(item, Fault):
                self._fault_count += 1
            else:
                self._reply_count += 1
        return item, response_id

    def _default_for(self, request: RecordedRequest, *, builtin: bool = False) -> PlanItem:
        """The custom default's answer (or the built-in one); failures become a 500."""
        with self._lock:
            fn = default_reply if builtin or self._default is None else self._default
        try:
            item = fn(request)
        except Exception as exc:  # report to the client instead of killing the handler
            return Fault(500, message=f"loopback default failed: {type(exc).__name__}: {exc}")
        if not isinstance(item, Fault | Reply):
            return Fault(500, message=f"loopback default returned {type(item).__name__}")
        return item

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopping; False means "stopped, abandon the request"."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
