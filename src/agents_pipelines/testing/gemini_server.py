"""A loopback HTTP server that speaks enough of the Gemini REST API for offline tests.

The real client stack (``langchain_google_genai.ChatGoogleGenerativeAI`` -> google-genai SDK
-> httpx) is pointed at this server with ``base_url=server.base_url`` (or the
``GOOGLE_GEMINI_BASE_URL`` environment variable) and any fake API key. Nothing on the client
side is mocked: requests really travel over a loopback socket, so serialization, error
classification, retries and timeouts all behave exactly as they do against Google.

Wire format (google-genai 2.x, Gemini Developer API backend):

* ``POST /v1beta/models/{model}:generateContent`` with a JSON body holding ``contents``,
  optional ``systemInstruction``, ``tools`` and ``generationConfig``. JSON mode is
  ``generationConfig.responseMimeType == "application/json"`` plus a schema in
  ``generationConfig.responseJsonSchema`` (plain JSON Schema) or
  ``generationConfig.responseSchema`` (Google's OpenAPI subset, upper-case types).
* ``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` answered as server-sent
  events, one ``data: {GenerateContentResponse}`` per chunk.
* Errors use Google's shape ``{"error": {"code", "message", "status", "details"}}``.

Example::

    with GeminiLoopbackServer() as server:
        server.plan(Fault.rate_limit(retry_after_s=2), Reply.text_reply("hello"))
        llm = ChatGoogleGenerativeAI(
            model="gemini-2.5-flash", google_api_key="test-key", base_url=server.base_url
        )
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import re
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Fault",
    "GeminiLoopbackServer",
    "RecordedRequest",
    "Reply",
    "Usage",
    "default_reply",
    "schema_example",
]

# google.rpc.Code names as the Gemini API reports them for each HTTP status.
_STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Messages modelled on what the real API returns, so error-string matching in callers
# sees something realistic.
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Request contains an invalid argument.",
    401: (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential."
    ),
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"

# /{api_version}/models/{model}:{method}; the SDK lets callers pick the api version.
_ROUTE = re.compile(
    r"^/(?P<version>v1beta|v1alpha|v1)/models/(?P<model>[^/:]+)"
    r":(?P<method>generateContent|streamGenerateContent)$"
)

# Beyond this schema depth the example generator only emits what is required, so
# recursive schemas (trees, linked lists) terminate.
_OPTIONAL_DEPTH_LIMIT = 6
_HARD_DEPTH_LIMIT = 40


# --------------------------------------------------------------------------------------
# Plan items
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """Token accounting reported in ``usageMetadata``.

    ``prompt`` includes ``cached`` (as in the real API); ``total`` is
    ``prompt + candidates + thoughts``.
    """

    prompt: int = 120
    candidates: int = 60
    thoughts: int = 25
    cached: int = 20

    def __post_init__(self) -> None:
        if min(self.prompt, self.candidates, self.thoughts, self.cached) < 0:
            raise ValueError("token counts must be >= 0")
        if self.cached > self.prompt:
            raise ValueError("cached tokens are part of the prompt; cached <= prompt")

    @property
    def total(self) -> int:
        """``totalTokenCount`` as Gemini computes it (cached tokens are inside prompt)."""
        return self.prompt + self.candidates + self.thoughts

    def to_json(self) -> dict[str, Any]:
        """Render as the API's ``usageMetadata`` object (zero optional counts omitted)."""
        meta: dict[str, Any] = {
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.candidates,
            "totalTokenCount": self.total,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
        }
        # The real API leaves these out when they are zero; mirror that.
        if self.thoughts:
            meta["thoughtsTokenCount"] = self.thoughts
        if self.cached:
            meta["cachedContentTokenCount"] = self.cached
        return meta


@dataclass(frozen=True)
class Reply:
    """A successful ``generateContent`` answer.

    ``text`` and ``json`` are mutually exclusive (``json`` is serialized into the single
    text part, the way Gemini answers in JSON mode; ``None`` means "not set", so a JSON
    ``null`` reply is not expressible). ``function_call`` adds a ``functionCall`` part and
    may be combined with either. ``delay_s`` is latency before the answer is written.
    """

    text: str | None = None
    json: Any = None
    function_call: tuple[str, dict[str, Any]] | None = None
    usage: Usage = field(default_factory=Usage)
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.text is not None and self.json is not None:
            raise ValueError("Reply takes text or json, not both")
        if self.text is None and self.json is None and self.function_call is None:
            raise ValueError("Reply needs text, json or function_call")
        if self.function_call is not None:
            name, args = self.function_call
            if not isinstance(name, str) or not isinstance(args, dict):
                raise TypeError("function_call must be (name: str, args: dict)")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")

    @classmethod
    def text_reply(cls, text: str, *, usage: Usage | None = None, delay_s: float = 0.0) -> Reply:
        """A plain text answer."""
        return cls(text=text, usage=usage or Usage(), delay_s=delay_s)

    @classmethod
    def json_reply(cls, value: Any, *, usage: Usage | None = None, delay_s: float = 0.0) -> Reply:
        """A JSON-mode answer: ``value`` is serialized as the text part."""
        return cls(json=value, usage=usage or Usage(), delay_s=delay_s)

    @classmethod
    def function_call_reply(
        cls,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        usage: Usage | None = None,
        delay_s: float = 0.0,
    ) -> Reply:
        """A tool call: the model asks the caller to run ``name(**args)``."""
        return cls(function_call=(name, dict(args or {})), usage=usage or Usage(), delay_s=delay_s)

    def body_text(self) -> str | None:
        """The text part as sent on the wire (JSON replies are serialized)."""
        if self.json is not None:
            return json.dumps(self.json, ensure_ascii=False)
        return self.text

    def parts(self) -> list[dict[str, Any]]:
        """The ``content.parts`` list of the candidate."""
        parts: list[dict[str, Any]] = []
        text = self.body_text()
        if text is not None:
            parts.append({"text": text})
        if self.function_call is not None:
            name, args = self.function_call
            parts.append({"functionCall": {"name": name, "args": args}})
        return parts


@dataclass(frozen=True)
class Fault:
    """A planned failure for one request.

    Design: the server first stalls for ``hang_s`` seconds (interrupted at once by
    ``stop()``, in which case the connection is dropped without an answer), then:

    * ``status`` 400..599 -> an error in Google's shape with that HTTP status;
    * ``status == 0`` -> no error: the request gets the default answer (as if the plan
      were empty). ``Fault.hang(s)`` builds this; with a client timeout shorter than
      ``s`` the client gives up first, which is how timeouts are simulated.

    ``retry_after_s`` adds a ``Retry-After`` header (whole seconds, rounded up, as HTTP
    requires) and a ``google.rpc.RetryInfo`` detail with the exact ``retryDelay``.

    ``echo_key`` puts the API key the client sent into the message, in place of
    ``{api_key}``: some real errors repeat the key, and what the caller does with it
    (logs, traces, artifacts) must still not leak it.
    """

    status: int
    retry_after_s: float | None = None
    hang_s: float = 0.0
    message: str = ""
    echo_key: bool = False

    def __post_init__(self) -> None:
        if self.status != 0 and not 400 <= self.status <= 599:
            raise ValueError("Fault.status must be 0 (hang only) or an HTTP 4xx/5xx code")
        if self.hang_s < 0:
            raise ValueError("hang_s must be >= 0")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")

    @classmethod
    def rate_limit(cls, retry_after_s: float | None = 1.0, message: str = "") -> Fault:
        """429 RESOURCE_EXHAUSTED, with retry advice unless ``retry_after_s`` is None."""
        return cls(429, retry_after_s=retry_after_s, message=message)

    @classmethod
    def server_error(cls, status: int = 500, message: str = "") -> Fault:
        """A 5xx: 500 INTERNAL by default, 503 UNAVAILABLE for an overloaded model."""
        if not 500 <= status <= 599:
            raise ValueError("server_error takes a 5xx status")
        return cls(status, message=message)

    @classmethod
    def hang(cls, seconds: float, status: int = 0) -> Fault:
        """Stall ``seconds``, then answer normally (``status=0``) or fail with ``status``."""
        return cls(status, hang_s=seconds)

    @classmethod
    def bad_request(cls, message: str = "") -> Fault:
        """400 INVALID_ARGUMENT (a permanent error: retrying cannot help)."""
        return cls(400, message=message)

    @classmethod
    def unauthenticated(cls, message: str = "") -> Fault:
        """401 UNAUTHENTICATED."""
        return cls(401, message=message)

    @classmethod
    def permission_denied(cls, message: str = "") -> Fault:
        """403 PERMISSION_DENIED."""
        return cls(403, message=message)

    @classmethod
    def permission_denied_echoing_key(cls) -> Fault:
        """403 PERMISSION_DENIED whose message repeats the API key the client sent."""
        return cls(
            403, message="Permission denied: API key {api_key} is not allowed", echo_key=True
        )

    @classmethod
    def not_found_echoing_key(cls) -> Fault:
        """404 NOT_FOUND whose message holds a URL with the key as a ``?key=`` parameter."""
        url = "https://generativelanguage.googleapis.com/v1beta/models/none:generateContent"
        return cls(
            404, message=f"Requested entity was not found: {url}?key={{api_key}}", echo_key=True
        )

    def error_json(self, api_key: str | None = None) -> dict[str, Any]:
        """The error body in Google's shape; ``api_key`` is the key the request sent."""
        message = self.message or _default_message(self.status)
        if self.echo_key:
            message = message.replace("{api_key}", api_key or "")
        error: dict[str, Any] = {
            "code": self.status,
            "message": message,
            "status": _status_name(self.status),
        }
        if self.retry_after_s is not None:
            error["details"] = [
                {"@type": _RETRY_INFO_TYPE, "retryDelay": _proto_duration(self.retry_after_s)}
            ]
        return {"error": error}

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After``) for this fault."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after_s))}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    ``headers`` keys are lower-cased. They include ``x-goog-api-key``, so the field is
    kept out of ``repr`` to avoid leaking the key into logs and assertion messages.
    """

    model: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: dict[str, Any] = field(repr=False)
    stream: bool = False

    @property
    def api_key(self) -> str | None:
        """The ``x-goog-api-key`` header the client sent, if any."""
        return self.headers.get("x-goog-api-key")

    @property
    def generation_config(self) -> dict[str, Any]:
        """``generationConfig`` of the body (empty when absent)."""
        config = self.body.get("generationConfig")
        return config if isinstance(config, dict) else {}

    @property
    def prompt_text(self) -> str:
        """All text parts of ``contents`` joined with newlines, in order."""
        texts: list[str] = []
        for content in self.body.get("contents") or []:
            for part in content.get("parts") or []:
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
        return "\n".join(texts)

    @property
    def wants_json(self) -> bool:
        """Whether the client asked for JSON mode."""
        return self.generation_config.get("responseMimeType") == "application/json"

    @property
    def response_schema(self) -> dict[str, Any] | None:
        """The JSON schema sent (``responseJsonSchema``, else ``responseSchema``)."""
        config = self.generation_config
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        return schema if isinstance(schema, dict) else None


PlanItem = Fault | Reply
DefaultFn = Callable[[RecordedRequest], PlanItem]


# --------------------------------------------------------------------------------------
# Wire helpers
# --------------------------------------------------------------------------------------


def _status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, "UNKNOWN")


def _default_message(status: int) -> str:
    if status in _DEFAULT_MESSAGES:
        return _DEFAULT_MESSAGES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _proto_duration(seconds: float) -> str:
    """Format like google.protobuf.Duration JSON: ``"2s"`` or ``"1.500s"``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": _status_name(status)}}


def _response_json(
    parts: list[dict[str, Any]],
    *,
    model: str,
    response_id: str,
    usage: Usage | None,
    finished: bool,
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` (a whole answer or one stream chunk)."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finished:
        candidate["finishReason"] = "STOP"
    response: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": model,
        "responseId": response_id,
    }
    if usage is not None:
        response["usageMetadata"] = usage.to_json()
    return response


def _stream_chunks(reply: Reply, *, model: str, response_id: str) -> list[dict[str, Any]]:
    """Split a reply into one or two stream chunks; usage and finishReason go on the last."""
    text = reply.body_text()
    if text is None or len(text) < 2:
        return [
            _response_json(
                reply.parts(),
                model=model,
                response_id=response_id,
                usage=reply.usage,
                finished=True,
            )
        ]
    half = len(text) // 2
    tail_parts: list[dict[str, Any]] = [{"text": text[half:]}, *reply.parts()[1:]]
    head = _response_json(
        [{"text": text[:half]}],
        model=model,
        response_id=response_id,
        usage=None,
        finished=False,
    )
    tail = _response_json(
        tail_parts, model=model, response_id=response_id, usage=reply.usage, finished=True
    )
    return [head, tail]


# --------------------------------------------------------------------------------------
# Default answers
# --------------------------------------------------------------------------------------


def default_reply(request: RecordedRequest) -> Reply:
    """The built-in answer used when the plan is empty and no custom default is set.

    JSON mode with a schema -> a deterministic document valid against the schema.
    JSON mode without a schema -> ``{"text": "Loopback reply to: ..."}`` (a text answer
    would not parse). Otherwise -> the text ``"Loopback reply to: <first 40 chars>"``.
    """
    text = f"Loopback reply to: {request.prompt_text[:40]}"
    if not request.wants_json:
        return Reply(text=text)
    schema = request.response_schema
    if schema is None:
        return Reply(json={"text": text})
    return Reply(json=schema_example(schema))


def schema_example(schema: Mapping[str, Any]) -> Any:
    """A deterministic JSON value that validates against ``schema``.

    Understands the JSON Schema subset that Pydantic and Gemini emit: objects
    (properties/required/additionalProperties), arrays (items/prefixItems/minItems/
    maxItems), scalars with bounds, formats and length limits, enum/const,
    anyOf/oneOf/allOf, ``$ref`` into ``$defs``/``definitions``, type lists, and Google's
    upper-case ``"STRING"``-style types. ``pattern`` and ``multipleOf`` are not honoured.
    """
    return _SchemaSampler(schema).sample(schema, "value", 0, "")


class _SchemaSampler:
    """Walks a schema and builds an example; holds the root so ``$ref`` can resolve."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root

    def sample(self, node: Any, name: str, depth: int, ordinal: str) -> Any:
        """Example for ``node``; ``name`` is the property and ``ordinal`` the array position
        (e.g. ``" 2"``), which keeps strings in different array items distinct."""
        if depth > _HARD_DEPTH_LIMIT:
            raise ValueError("schema nests too deeply (unsatisfiable recursion?)")
        if not isinstance(node, Mapping):  # `true` / `{}`-like schemas accept anything
            return _string_example(name + ordinal, {})
        node = self._flatten(node)
        if "const" in node:
            return node["const"]
        if node.get("enum"):
            return node["enum"][0]
        for key in ("anyOf", "oneOf"):
            if node.get(key):
                option = self._pick_option(node[key], depth)
                return self.sample(option, name, depth + 1, ordinal)
        kind = _schema_type(node)
        if kind == "object":
            return self._object(node, name, depth, ordinal)
        if kind == "array":
            return self._array(node, name, depth, ordinal)
        if kind == "integer":
            return _integer_example(node)
        if kind == "number":
            return _number_example(node)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return _string_example(name + ordinal, node)

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        target: Any = self._root
        for token in ref[2:].split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        if not isinstance(target, Mapping):
            raise ValueError(f"$ref {ref!r} does not point at a schema object")
        return target

    def _flatten(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """Inline ``$ref`` and merge ``allOf`` so the rest only sees plain keywords."""
        merged = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
        parts: list[Mapping[str, Any]] = []
        if "$ref" in node:
            parts.append(self._resolve(node["$ref"]))
        parts.extend(node.get("allOf") or [])
        for part in parts:
            part = self._flatten(part)
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**value, **merged.get("properties", {})}
                elif key == "required":
                    merged["required"] = sorted({*value, *merged.get("required", [])})
                else:
                    merged.setdefault(key, value)
        return merged

    @staticmethod
    def _pick_option(options: list[Any], depth: int) -> Any:
        """Prefer a real value over ``null``, except deep down where null ends recursion."""
        non_null = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
        if depth >= _OPTIONAL_DEPTH_LIMIT and len(non_null) < len(options):
            return {"type": "null"}
        return non_null[0] if non_null else options[0]

    def _object(
        self, node: Mapping[str, Any], name: str, depth: int, ordinal: str
    ) -> dict[str, Any]:
        properties: Mapping[str, Any] = node.get("properties") or {}
        required = set(node.get("required") or [])
        order = node.get("propertyOrdering") or list(properties)
        shallow = depth < _OPTIONAL_DEPTH_LIMIT
        result = {
            key: self.sample(properties[key], key, depth + 1, ordinal)
            for key in order
            if key in properties and (shallow or key in required)
        }
        extra = node.get("additionalProperties")
        if not properties and isinstance(extra, Mapping) and shallow:
            # A map type (dict[str, X]): one entry shows the value shape.
            key = f"{name}_key{ordinal.replace(' ', '_')}"
            result[key] = self.sample(extra, f"{name}_key", depth + 1, ordinal)
        return result

    def _array(self, node: Mapping[str, Any], name: str, depth: int, ordinal: str) -> list[Any]:
        def position(i: int) -> str:  # " 1", " 2"; nested arrays give " 1.2"
            return f"{ordinal}.{i + 1}" if ordinal else f" {i + 1}"

        prefix = node.get("prefixItems")
        if prefix:
            return [self.sample(s, name, depth + 1, position(i)) for i, s in enumerate(prefix)]
        count = 2 if depth < _OPTIONAL_DEPTH_LIMIT else 0
        count = max(count, int(node.get("minItems", 0)))
        if node.get("maxItems") is not None:
            count = min(count, int(node["maxItems"]))
        items = node.get("items", {})
        return [self.sample(items, name, depth + 1, position(i)) for i in range(count)]


def _schema_type(node: Mapping[str, Any]) -> str:
    """Normalize ``type`` (lists, Google's upper case) or infer it from keywords."""
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [str(k).lower() for k in kind]
        kind = next((k for k in kinds if k != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return "string"


_FORMAT_EXAMPLES: dict[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "user@example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


def _string_example(name: str, node: Mapping[str, Any]) -> str:
    fmt = node.get("format")
    if fmt in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[fmt]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "value"
    if fmt in ("uri", "url", "uri-reference"):
        return f"https://example.com/{slug}"
    if fmt == "uuid":
        return str(uuid.uuid5(uuid.NAMESPACE_URL, slug))
    text = f"example {name}"
    min_len = int(node.get("minLength", 0))
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if node.get("maxLength") is not None:
        text = text[: int(node["maxLength"])]
    return text


def _bounds(node: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_exclusive, high, high_exclusive) across JSON Schema drafts."""
    low, high = node.get("minimum"), node.get("maximum")
    low_excl = high_excl = False
    ex_min, ex_max = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if isinstance(ex_min, bool):  # draft 4 / OpenAPI: a flag on minimum
        low_excl = ex_min
    elif ex_min is not None:
        low, low_excl = ex_min, True
    if isinstance(ex_max, bool):
        high_excl = ex_max
    elif ex_max is not None:
        high, high_excl = ex_max, True
    return (
        None if low is None else float(low),
        low_excl,
        None if high is None else float(high),
        high_excl,
    )


def _integer_example(node: Mapping[str, Any]) -> int:
    low, low_excl, high, high_excl = _bounds(node)
    value = 150
    if low is not None:
        value = max(value, math.floor(low) + 1 if low_excl else math.ceil(low))
    if high is not None:
        value = min(value, math.ceil(high) - 1 if high_excl else math.floor(high))
    return value


def _number_example(node: Mapping[str, Any]) -> float:
    low, low_excl, high, high_excl = _bounds(node)
    value = 1.5

    def fits(v: float) -> bool:
        above = low is None or (v > low if low_excl else v >= low)
        below = high is None or (v < high if high_excl else v <= high)
        return above and below

    if fits(value):
        return value
    if low is not None and high is not None:
        return (low + high) / 2
    if low is not None:
        return low + 1.0
    assert high is not None  # fits() can only fail because of a bound
    return high - 1.0


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------


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
        self._send_json(404, _error_body(404, f"Method not found: GET {self.path}"))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = _ROUTE.match(url.path)
        if route is None:
            self._send_json(404, _error_body(404, f"Method not found: POST {url.path}"))
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, _error_body(400, "Invalid JSON payload received."))
            return
        if not isinstance(body, dict):
            self._send_json(400, _error_body(400, "Request body must be a JSON object."))
            return
        request = RecordedRequest(
            model=route["model"],
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            stream=route["method"] == "streamGenerateContent",
        )
        sse = parse_qs(url.query).get("alt") == ["sse"]
        self._answer(request, sse=sse)

    def _answer(self, request: RecordedRequest, *, sse: bool) -> None:
        owner = self.server.owner
        item, response_id = owner._take(request)
        reply = self._serve_fault(item, request) if isinstance(item, Fault) else item
        if reply is None:
            return
        if not owner._sleep(reply.delay_s):
            self.close_connection = True  # stopped mid-delay: drop without answering
            return
        if request.stream:
            self._send_stream(reply, request.model, response_id, sse=sse)
            return
        payload = _response_json(
            reply.parts(),
            model=request.model,
            response_id=response_id,
            usage=reply.usage,
            finished=True,
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

    def _send_stream(self, reply: Reply, model: str, response_id: str, *, sse: bool) -> None:
        chunks = _stream_chunks(reply, model=model, response_id=response_id)
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


# --------------------------------------------------------------------------------------
# Public server
# --------------------------------------------------------------------------------------


class GeminiLoopbackServer:
    """A Gemini-compatible HTTP server on 127.0.0.1 with a scripted answer queue.

    Thread-safe. Use as a context manager or call ``start()``/``stop()``; a stopped
    server cannot be restarted (make a new one).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: collections.deque[PlanItem] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._default: DefaultFn | None = None
        self._fault_count = 0
        self._reply_count = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

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

    def reset(self) -> None:
        """Forget the plan, the recorded requests, the counters and any custom default."""
        with self._lock:
            self._plan.clear()
            self._requests.clear()
            self._default = None
            self._fault_count = self._reply_count = 0

    # -- observation --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

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

    # -- used by the handler --------------------------------------------------------------

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
