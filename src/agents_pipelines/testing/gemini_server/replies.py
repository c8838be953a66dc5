"""Answers: a ``Reply`` and its ``Usage``, the ``RecordedRequest`` it answers, the built-in
default answer and the wire form of a response (whole or as stream chunks)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agents_pipelines.schema_sample import schema_example

# The tier a request asks for (its ``serviceTier``; left out: standard), and how Gemini says
# which tier served it: ``usageMetadata.serviceTier`` (the Gemini API) and
# ``usageMetadata.trafficType`` (google-genai's TrafficType names, as Vertex AI answers).
STANDARD = "standard"
TRAFFIC_TYPES = {
    "standard": "ON_DEMAND",
    "flex": "ON_DEMAND_FLEX",
    "priority": "ON_DEMAND_PRIORITY",
}


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

    def to_json(self, tier: str = STANDARD) -> dict[str, Any]:
        """Render as the API's ``usageMetadata`` object (zero optional counts omitted),
        served at service ``tier``."""
        meta: dict[str, Any] = {
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.candidates,
            "totalTokenCount": self.total,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt}],
            "serviceTier": tier,
            "trafficType": TRAFFIC_TYPES[tier],
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
    ``served_tier`` is the service tier that answers (left out: the one the request asked
    for); ``standard`` for a ``priority`` request plays Gemini's downgrade past its limits.
    """

    text: str | None = None
    json: Any = None
    function_call: tuple[str, dict[str, Any]] | None = None
    usage: Usage = field(default_factory=Usage)
    delay_s: float = 0.0
    served_tier: str | None = None

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
        if self.served_tier is not None and self.served_tier not in TRAFFIC_TYPES:
            raise ValueError(f"served_tier must be one of {sorted(TRAFFIC_TYPES)}")

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
    batch: str | None = None  # the batch job (``batches/ID``) the request came in, if any

    @property
    def api_key(self) -> str | None:
        """The ``x-goog-api-key`` header the client sent, if any."""
        return self.headers.get("x-goog-api-key")

    @property
    def service_tier(self) -> str:
        """The tier the request asked for (``serviceTier``); standard when left out."""
        asked = str(self.body.get("serviceTier") or STANDARD).lower()
        return asked if asked in TRAFFIC_TYPES else STANDARD

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
    def function_responses(self) -> list[dict[str, Any]]:
        """The ``functionResponse`` parts of ``contents`` (``{"name", "response"}``), in
        order: the tool results the client sent back."""
        return [
            part["functionResponse"]
            for content in self.body.get("contents") or []
            for part in content.get("parts") or []
            if isinstance(part.get("functionResponse"), dict)
        ]

    @property
    def declared_tools(self) -> list[str]:
        """The names of the functions the request offers the model (``tools``)."""
        return [
            declaration.get("name", "")
            for tool in self.body.get("tools") or []
            for declaration in tool.get("functionDeclarations") or []
        ]

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


_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The server's countTokens rule: one token per word (a run of letters, digits and
    underscores) and one per other non-space character. Deterministic and simple to check
    by hand; it is not Gemini's tokenizer, whose vocabulary is not available offline."""
    return len(_TOKEN.findall(text))


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


def response_json(
    parts: list[dict[str, Any]],
    *,
    model: str,
    response_id: str,
    usage: Usage | None,
    finished: bool,
    tier: str = STANDARD,
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
        response["usageMetadata"] = usage.to_json(tier)
    return response


def stream_chunks(
    reply: Reply, *, model: str, response_id: str, tier: str = STANDARD
) -> list[dict[str, Any]]:
    """Split a reply into one or two stream chunks; usage and finishReason go on the last."""
    text = reply.body_text()
    if text is None or len(text) < 2:
        return [
            response_json(
                reply.parts(),
                model=model,
                response_id=response_id,
                usage=reply.usage,
                finished=True,
                tier=tier,
            )
        ]
    half = len(text) // 2
    tail_parts: list[dict[str, Any]] = [{"text": text[half:]}, *reply.parts()[1:]]
    head = response_json(
        [{"text": text[:half]}],
        model=model,
        response_id=response_id,
        usage=None,
        finished=False,
    )
    tail = response_json(
        tail_parts,
        model=model,
        response_id=response_id,
        usage=reply.usage,
        finished=True,
        tier=tier,
    )
    return [head, tail]
