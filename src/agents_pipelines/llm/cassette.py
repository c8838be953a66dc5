"""A cassette: the Gemini exchanges of recorded runs, one JSON object per line.

    {"fingerprint": "sha256:…", "node": "classify",
     "request": {"endpoint": "models/gemini-2.5-flash:generateContent", "body": {…}},
     "response": {"status": 200, "content_type": "application/json", "body": {…}}}

``request.body`` is the REST body the google-genai SDK sent (contents, systemInstruction,
generationConfig with its response schema, tools, toolConfig); ``response.body`` is what
Gemini answered, ``usageMetadata`` included. No URL, header or API key is stored: the
endpoint keeps only the model and method. A body that is not JSON (a streamed
``streamGenerateContent`` answer, server-sent events) is kept as ``response.text``.

The fingerprint is the sha256 of the request as canonical JSON (sorted keys, no spaces), so
it is the same in every process and under every hash seed, and depends on nothing but the
model, the method and the body: not on the key, the base URL or the API version.

Appends are whole lines under an exclusive ``flock`` on the file (and a lock per process),
so threads and processes that record into one cassette at once never interleave lines.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents_pipelines.errors import CassetteError
from agents_pipelines.llm.cassette_file import (
    cassette_lines,
    implausible_usage,
    implausible_usage_error,
)
from agents_pipelines.llm.json_diff import Difference, differences
from agents_pipelines.redaction import redact_value

__all__ = [
    "Cassette",
    "Exchange",
    "append_exchange",
    "describe_call",
    "endpoint_of",
    "fingerprint",
    "missing_cassette",
    "request_record",
]

# ".../v1beta/models/gemini-2.5-flash:generateContent" -> "models/gemini-2.5-flash:generateContent"
# The Batch and Files APIs too (llm.batch): "batches/ID:cancel", "files/ID:download".
_ENDPOINT = re.compile(
    r"((?:tuned)?[mM]odels/[^/]+:[A-Za-z]+|batches(?:/[^/]+)?|files(?:/[^/]+)?)$"
)
_append_lock = threading.Lock()


def endpoint_of(url_path: str) -> str:
    """The model and method of a request's URL path, without base URL or API version."""
    found = _ENDPOINT.search(url_path)
    return found.group(1) if found else url_path


def fingerprint(request: dict[str, Any]) -> str:
    """sha256 of ``request`` as canonical JSON: stable across processes and hash seeds."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_record(url_path: str, body: bytes) -> dict[str, Any]:
    """The request as a cassette keeps it (and fingerprints it): endpoint and JSON body.
    Any API key in the body (a prompt that quotes one) is redacted, here and so in the
    fingerprint, so that recording and replay agree on it."""
    parsed: Any = json.loads(body) if body else None
    return {"endpoint": endpoint_of(url_path), "body": redact_value(_without_run_names(parsed))}


def _without_run_names(body: Any) -> Any:
    """A batch job's request without its display name (llm.batch), which carries the run's
    checkpoint thread (a Dagster run id): a replay's run asks the same, under another."""
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, dict) or "displayName" not in batch:
        return body
    return {**body, "batch": {k: v for k, v in batch.items() if k != "displayName"}}


@dataclass(frozen=True)
class Exchange:
    """One recorded request and Gemini's answer; ``line`` is its line in the cassette."""

    request: dict[str, Any]
    response: dict[str, Any]
    node: str | None = None  # the workflow node that sent it (for people; not matched)
    item: int | None = None  # and the map item
    line: int = 0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.request)

    def to_line(self) -> str:
        entry = {
            "fingerprint": self.fingerprint,
            "node": self.node,
            **({"item": self.item} if self.item is not None else {}),
            "request": self.request,
            "response": self.response,
        }
        return json.dumps(redact_value(entry), ensure_ascii=False) + "\n"


def missing_cassette(path: Path) -> CassetteError:
    return CassetteError(
        f"Cassette {path} does not exist. Record it first: run with "
        "AGENTS_PIPELINES_LLM_BACKEND=record, this AGENTS_PIPELINES_CASSETTE and a GOOGLE_API_KEY."
    )


def append_exchange(path: Path, exchange: Exchange) -> None:
    """Append ``exchange`` as one whole line, under a lock other threads and processes share."""
    data = exchange.to_line().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock, open(path, "ab") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released as the file closes
        file.write(data)
        file.flush()


@dataclass
class Cassette:
    """A loaded cassette, answering requests by fingerprint.

    A fingerprint recorded several times (map items with equal inputs, a run recorded twice)
    is answered with its recordings in order, then with the last one again and again."""

    path: Path
    exchanges: tuple[Exchange, ...]
    _by_fingerprint: dict[str, list[Exchange]] = field(init=False)
    _served: Counter[str] = field(init=False, default_factory=Counter)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._by_fingerprint = {}
        for exchange in self.exchanges:
            self._by_fingerprint.setdefault(exchange.fingerprint, []).append(exchange)

    @classmethod
    def load(cls, path: Path) -> Cassette:
        """Every line checked: a malformed one, or one with implausible usage, is named by
        file and line; a path that is not a regular file of a sane size is refused before
        it is read (llm.cassette_file)."""
        try:
            lines = cassette_lines(path)
            exchanges = [_parse(path, n, line) for n, line in lines if line.strip()]
        except FileNotFoundError:
            raise missing_cassette(path) from None
        return cls(path, tuple(exchanges))

    def take(self, request: dict[str, Any]) -> Exchange | None:
        """The next recorded answer to ``request``, or None if it was never recorded."""
        key = fingerprint(request)
        with self._lock:
            recorded = self._by_fingerprint.get(key)
            if not recorded:
                return None
            served = self._served[key]
            self._served[key] += 1
        return recorded[min(served, len(recorded) - 1)]

    def nearest(
        self, request: dict[str, Any], node: str | None = None
    ) -> tuple[Exchange, list[Difference]] | None:
        """The recorded request with the fewest differences from ``request``, one that
        ``node`` sent first among equals, then the earliest; with those differences. None
        for an empty cassette."""
        best: tuple[tuple[int, bool], Exchange, list[Difference]] | None = None
        for exchange in self.exchanges:
            found = differences(exchange.request, request)
            rank = (len(found), exchange.node != node)
            if best is None or rank < best[0]:
                best = (rank, exchange, found)
        return None if best is None else (best[1], best[2])


def _parse(path: Path, number: int, line: str) -> Exchange:
    where = f"{path}:{number}"
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CassetteError(
            f"{where}: not a JSON line ({exc.msg}). Fix: delete the line, or the cassette, and "
            "record again."
        ) from None
    request = entry.get("request") if isinstance(entry, dict) else None
    response = entry.get("response") if isinstance(entry, dict) else None
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise CassetteError(
            f"{where}: an exchange needs a `request` and a `response` object. Fix: delete the "
            "line, or the cassette, and record again."
        )
    if (problem := implausible_usage(response)) is not None:
        raise implausible_usage_error(where, problem)
    node, item = entry.get("node"), entry.get("item")
    return Exchange(
        request,
        response,
        node if isinstance(node, str) else None,
        item if isinstance(item, int) else None,
        number,
    )


def describe_call(node: str | None, item: int | None) -> str:
    """``node `classify` (item 2)``, for messages."""
    if not node:
        return "a call outside any workflow node"
    return f"node `{node}`" + (f" (item {item})" if item is not None else "")
