"""Record Gemini exchanges into a cassette, and replay them with no network and no key.

Both work at the HTTP level, under the google-genai SDK: ChatGoogleGenerativeAI gets an
httpx transport (``client_args={"transport": ...}``, which the SDK hands to its httpx
clients, sync and async), so a replayed call goes through exactly the code of a real one:
the SDK parses the same JSON, LangChain reads the same ``usageMetadata``, and the ledger,
the trace and the price table see the same tokens and cost.

- ``record`` sends each request to Gemini through an httpx client of its own (which honours
  proxy variables and SSL_CERT_FILE as a default client does) and appends each successful
  exchange to the cassette. A failed attempt (429, 5xx) is not recorded: its retry is.
- ``replay`` answers from the cassette. A request it has not recorded raises
  UnrecordedRequestError naming the node, the fingerprint and how the nearest recorded
  request differs. That error is not transient: nothing retries it, nothing calls Gemini.

The clients are built with ``trust_env=False``: with proxy variables set, httpx would
otherwise mount proxy transports ahead of ours and send the request past the cassette.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from agents_pipelines._compat.genai import sdk_http as http
from agents_pipelines.errors import CassetteError, UnrecordedRequestError
from agents_pipelines.llm.cassette import (
    Cassette,
    Exchange,
    append_exchange,
    describe_call,
    missing_cassette,
    request_record,
)
from agents_pipelines.llm.cassette_file import check_recordable
from agents_pipelines.usage.records import ITEM_KEY, NODE_KEY, PROMPTS_KEY

__all__ = ["CassetteTransport", "RecordingTransport", "ReplayTransport", "transport_for"]

# Headers that describe how the body travelled, not what it is: the body handed on is decoded.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_SHOWN_DIFFERENCES = 3


class CassetteTransport(http.BaseTransport, http.AsyncBaseTransport):
    """One per cassette, shared by every client of the process. ``offline``: the client
    needs no API key, because no request leaves the process."""

    offline = False

    def __init__(self, path: Path):
        self.path = path

    def __repr__(self) -> str:
        """Stable across processes: LangChain puts it in the model's serialized settings."""
        return f"<{type(self).__name__} {self.path}>"

    def close(self) -> None:
        """Shared by every client: a client that is garbage-collected must not close it."""

    async def aclose(self) -> None:
        """As ``close``."""


class RecordingTransport(CassetteTransport):
    def __init__(self, path: Path):
        super().__init__(path)
        self._client = http.Client(timeout=None)
        self._async_client: http.AsyncClient | None = None

    def handle_request(self, request: http.Request) -> http.Response:
        response = self._client.send(request)
        return self._recorded(request, response)

    async def handle_async_request(self, request: http.Request) -> http.Response:
        if self._async_client is None:
            self._async_client = http.AsyncClient(timeout=None)
        response = await self._async_client.send(request)
        return self._recorded(request, response)

    def _recorded(self, request: http.Request, response: http.Response) -> http.Response:
        if response.is_success:
            exchange = Exchange(
                _keyed(request_record(request.url.path, request.content)),
                _response_record(response),
                *current_call(),
            )
            append_exchange(self.path, exchange)
        headers = [(k, v) for k, v in response.headers.items() if k not in _TRANSFER_HEADERS]
        return http.Response(response.status_code, headers=headers, content=response.content)


class ReplayTransport(CassetteTransport):
    offline = True

    def __init__(self, cassette: Cassette):
        super().__init__(cassette.path)
        self.cassette = cassette

    def handle_request(self, request: http.Request) -> http.Response:
        return self._answer(request)

    async def handle_async_request(self, request: http.Request) -> http.Response:
        return self._answer(request)

    def _answer(self, request: http.Request) -> http.Response:
        recorded = _keyed(request_record(request.url.path, request.content))
        exchange = self.cassette.take(recorded)
        if exchange is None:
            raise UnrecordedRequestError(self._miss(recorded))
        return _response(exchange.response)

    def _miss(self, request: dict[str, Any]) -> str:
        exchange = Exchange(request, {})
        node, item = current_call()
        text = (
            f"Replay: {describe_call(node, item)} sent a Gemini request that "
            f"cassette {self.path} has not recorded (fingerprint {exchange.fingerprint}). "
        )
        nearest = self.cassette.nearest(request, node)
        if nearest is None:
            text += "The cassette holds no exchange. "
        else:
            near, found = nearest
            shown = "; ".join(str(d) for d in found[:_SHOWN_DIFFERENCES])
            hidden = len(found) - _SHOWN_DIFFERENCES
            more = f" (and {hidden} more)" if hidden > 0 else ""
            text += (
                f"The nearest recorded request (line {near.line}, from "
                f"{describe_call(near.node, near.item)}) "
                f"differs at {len(found)} place(s): {shown}{more}. "
            )
        return text + (
            "Fix: record the cassette again (AGENTS_PIPELINES_LLM_BACKEND=record with a key; "
            "delete the file first, as recording appends), or undo the change."
        )


def current_call() -> tuple[str | None, int | None]:
    """The workflow node and map item whose call this is, from the run config that LangGraph
    sets (a context variable) around each node, and a map node around each item."""
    # LangChain's public read of that config: about 5 us a request (its private context
    # variable: 0.1 us), against milliseconds for the exchange itself.
    from langchain_core.runnables.config import ensure_config

    metadata = ensure_config().get("metadata") or {}
    node = metadata.get(NODE_KEY) or metadata.get("langgraph_node")
    item = metadata.get(ITEM_KEY)
    return (str(node) if node else None, item if isinstance(item, int) else None)


def _keyed(record: dict[str, Any]) -> dict[str, Any]:
    """The request, with the version of its node's registry prompt when it has one (the run
    config's PROMPTS_KEY): two versions of the same text are two recordings."""
    from langchain_core.runnables.config import ensure_config

    kept = (ensure_config().get("metadata") or {}).get(PROMPTS_KEY)
    node, _ = current_call()
    if not isinstance(kept, str) or node is None:
        return record
    try:
        version = (json.loads(kept).get("nodes") or {}).get(node)
    except (ValueError, AttributeError):
        return record
    return {**record, "prompt_version": version} if isinstance(version, str) else record


def transport_for(mode: str, cassette: str | None) -> CassetteTransport:
    """The transport of ``mode`` (record or replay) for the cassette file ``cassette``."""
    if not cassette:
        raise CassetteError(
            f"AGENTS_PIPELINES_LLM_BACKEND={mode} needs a cassette: set "
            "AGENTS_PIPELINES_CASSETTE to a .jsonl file (e.g. tests/cassettes/triage.jsonl)."
        )
    path = Path(cassette).resolve()
    if mode == "record":
        check_recordable(path)
        return _recording(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise missing_cassette(path) from None
    return _replaying(path, stat.st_mtime_ns, stat.st_size)


# Module-level, not in the registry: one writer per cassette file in a process (its state is the
# file); a replay is loaded again whenever its file changes (mtime and size in the key).
@functools.cache
def _recording(path: Path) -> RecordingTransport:
    return RecordingTransport(path)


@functools.lru_cache(maxsize=8)
def _replaying(path: Path, mtime_ns: int, size: int) -> ReplayTransport:
    """Loaded again when the file changes; the order of repeated answers is per load."""
    return ReplayTransport(Cassette.load(path))


def _response_record(response: http.Response) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    record: dict[str, Any] = {"status": response.status_code, "content_type": content_type}
    if "json" in content_type:
        record["body"] = response.json()
    else:
        record["text"] = response.text
    return record


def _response(record: dict[str, Any]) -> http.Response:
    headers = {"content-type": str(record.get("content_type") or "application/json")}
    if "body" in record:
        content = json.dumps(record["body"], ensure_ascii=False).encode("utf-8")
    else:
        content = str(record.get("text", "")).encode("utf-8")
    return http.Response(int(record.get("status", 200)), headers=headers, content=content)
