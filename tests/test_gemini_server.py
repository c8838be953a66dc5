"""GeminiLoopbackServer driven by the real ChatGoogleGenerativeAI client over loopback HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import reduce
from operator import add
from typing import Literal

import httpx
import pytest
from google.genai import errors as genai_errors
from langchain_core.exceptions import ModelAPIError, ModelRateLimitError
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import (
    ChatGoogleGenerativeAIError,
    GoogleAPIError,
    GoogleAuthenticationError,
    GoogleInvalidRequestError,
    GoogleRateLimitError,
)
from pydantic import BaseModel, Field

from agents_pipelines.llm.gemini import is_transient
from agents_pipelines.testing import Fault, GeminiLoopbackServer, RecordedRequest, Reply, Usage
from agents_pipelines.testing.gemini_server import schema_example

API_KEY = "test-key-123"
MODEL = "gemini-2.5-flash"


@pytest.fixture
def server() -> Iterator[GeminiLoopbackServer]:
    with GeminiLoopbackServer() as srv:
        yield srv


def make_llm(server: GeminiLoopbackServer, timeout: float = 5.0) -> ChatGoogleGenerativeAI:
    # max_retries=1 means "one attempt": the SDK must not retry behind the test's back.
    return ChatGoogleGenerativeAI(
        model=MODEL,
        google_api_key=API_KEY,
        base_url=server.base_url,
        max_retries=1,
        timeout=timeout,
    )


class Step(BaseModel):
    title: str
    minutes: int = Field(ge=1, le=45)


class Recipe(BaseModel):
    name: str
    difficulty: Literal["easy", "hard"]
    steps: list[Step]
    note: str | None = None
    rating: float
    published: datetime
    vegan: bool


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


# --------------------------------------------------------------------------------------
# Successful answers
# --------------------------------------------------------------------------------------


def test_text_reply_with_usage_metadata(server: GeminiLoopbackServer) -> None:
    server.plan(Reply.text_reply("planned answer"))

    msg = make_llm(server).invoke("hi")

    assert msg.content == "planned answer"
    # langchain-google-genai: input = promptTokenCount (cached included),
    # output = candidates + thoughts, total = totalTokenCount.
    assert msg.usage_metadata == {
        "input_tokens": 120,
        "output_tokens": 85,
        "total_tokens": 205,
        "input_token_details": {"cache_read": 20},
        "output_token_details": {"reasoning": 25},
    }
    assert msg.response_metadata["finish_reason"] == "STOP"
    assert msg.response_metadata["model_name"] == MODEL
    assert (server.reply_count, server.fault_count, server.pending) == (1, 0, 0)


def test_custom_usage_is_reported(server: GeminiLoopbackServer) -> None:
    server.plan(Reply.text_reply("x", usage=Usage(prompt=10, candidates=3, thoughts=0, cached=0)))

    msg = make_llm(server).invoke("hi")

    assert msg.usage_metadata is not None
    assert msg.usage_metadata["input_tokens"] == 10
    assert msg.usage_metadata["output_tokens"] == 3
    assert msg.usage_metadata["total_tokens"] == 13


def test_default_text_reply_echoes_prompt(server: GeminiLoopbackServer) -> None:
    msg = make_llm(server).invoke("Summarize the quarterly numbers for the board, please")

    assert msg.content == "Loopback reply to: Summarize the quarterly numbers for the "


def test_recorded_request_and_api_key(server: GeminiLoopbackServer) -> None:
    make_llm(server).invoke("hello there")

    [rec] = server.requests
    assert isinstance(rec, RecordedRequest)
    assert rec.model == MODEL
    # google-genai 2 used /v1beta/, 3 uses /v1/: the server answers both, the test takes either.
    assert re.fullmatch(rf"/v1(beta)?/models/{MODEL}:generateContent", rec.path)
    assert rec.headers["x-goog-api-key"] == API_KEY
    assert rec.api_key == API_KEY
    assert API_KEY not in repr(rec)  # the key must not leak into logs/assertion output
    assert rec.prompt_text == "hello there"
    assert rec.wants_json is False
    assert rec.response_schema is None
    assert rec.stream is False


def test_structured_output_gets_schema_valid_default(server: GeminiLoopbackServer) -> None:
    structured = make_llm(server).with_structured_output(Recipe, method="json_schema")

    result = structured.invoke("a recipe")

    assert isinstance(result, Recipe)
    assert result.name == "example name"
    assert result.difficulty == "easy"
    assert [s.title for s in result.steps] == ["example title 1", "example title 2"]
    assert [s.minutes for s in result.steps] == [45, 45]  # 150 clamped to le=45
    assert result.vegan is True
    [rec] = server.requests
    assert rec.wants_json is True
    assert rec.response_schema is not None
    assert rec.response_schema["required"] == [
        "name",
        "difficulty",
        "steps",
        "rating",
        "published",
        "vegan",
    ]
    # Exact wire field names the SDK uses for JSON mode.
    config = rec.body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" in config


def test_planned_json_reply(server: GeminiLoopbackServer) -> None:
    step = {"title": "boil", "minutes": 10}
    planned = {
        "name": "soup",
        "difficulty": "hard",
        "steps": [step],
        "rating": 4.5,
        "published": "2024-05-01T10:00:00Z",
        "vegan": False,
    }
    server.plan(Reply.json_reply(planned))

    result = make_llm(server).with_structured_output(Recipe, method="json_schema").invoke("x")

    assert isinstance(result, Recipe)
    assert result.name == "soup"
    assert result.steps == [Step(title="boil", minutes=10)]


def test_function_call_reaches_tool_calls(server: GeminiLoopbackServer) -> None:
    server.plan(Reply.function_call_reply("get_weather", {"city": "Paris"}))

    msg = make_llm(server).bind_tools([get_weather]).invoke("weather in Paris?")

    assert len(msg.tool_calls) == 1
    assert msg.tool_calls[0]["name"] == "get_weather"
    assert msg.tool_calls[0]["args"] == {"city": "Paris"}
    declarations = server.requests[0].body["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["get_weather"]


def test_streaming_reply(server: GeminiLoopbackServer) -> None:
    server.plan(Reply.text_reply("hello streaming world"))

    chunks = list(make_llm(server).stream("stream it"))

    merged = reduce(add, chunks)
    assert merged.content == "hello streaming world"
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["total_tokens"] == 205
    [rec] = server.requests
    assert rec.stream is True
    assert rec.path.endswith(":streamGenerateContent?alt=sse")


def test_set_default_and_plan_order(server: GeminiLoopbackServer) -> None:
    server.set_default(lambda req: Reply.text_reply(req.prompt_text.upper()))
    server.plan(Reply.text_reply("first"))
    llm = make_llm(server)

    assert llm.invoke("one").content == "first"
    assert llm.invoke("two").content == "TWO"
    assert server.reply_count == 2


def test_failing_custom_default_becomes_500(server: GeminiLoopbackServer) -> None:
    def broken(req: RecordedRequest) -> Reply:
        raise KeyError("missing")

    server.set_default(broken)

    with pytest.raises(GoogleAPIError) as excinfo:
        make_llm(server).invoke("hi")

    assert excinfo.value.code == 500
    assert "KeyError" in (excinfo.value.message or "")


def test_env_base_url(server: GeminiLoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK reads GOOGLE_GEMINI_BASE_URL when no base_url is given.
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.base_url)
    server.plan(Reply.text_reply("via env"))
    llm = ChatGoogleGenerativeAI(model=MODEL, google_api_key=API_KEY, max_retries=1, timeout=5)

    assert llm.invoke("hi").content == "via env"


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------


def test_rate_limit_then_success(server: GeminiLoopbackServer) -> None:
    server.plan(Fault.rate_limit(retry_after_s=2), Reply.text_reply("recovered"))
    llm = make_llm(server)

    with pytest.raises(GoogleRateLimitError) as excinfo:
        llm.invoke("hi")

    err = excinfo.value
    assert isinstance(err, ModelRateLimitError) and err.is_retryable
    # The langchain wrapper carries only a message; the SDK error is its __cause__.
    cause = err.__cause__
    assert isinstance(cause, genai_errors.ClientError)
    assert cause.code == 429
    assert cause.status == "RESOURCE_EXHAUSTED"
    assert cause.response.headers["retry-after"] == "2"
    assert cause.details["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}
    ]
    assert llm.invoke("again").content == "recovered"
    assert len(server.requests) == 2  # no hidden SDK retry
    assert (server.fault_count, server.reply_count) == (1, 1)


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
def test_server_error(server: GeminiLoopbackServer, status: int, name: str) -> None:
    server.plan(Fault.server_error(status))

    with pytest.raises(GoogleAPIError) as excinfo:
        make_llm(server).invoke("hi")

    err = excinfo.value
    # GoogleAPIError *is* a google.genai ServerError, so code/status are on it directly.
    assert isinstance(err, genai_errors.ServerError)
    assert isinstance(err, ModelAPIError) and err.is_retryable
    assert err.code == status
    assert err.status == name


@pytest.mark.parametrize(
    ("fault", "exc_type", "code", "name"),
    [
        (Fault.bad_request("bad field"), GoogleInvalidRequestError, 400, "INVALID_ARGUMENT"),
        (Fault.unauthenticated(), GoogleAuthenticationError, 401, "UNAUTHENTICATED"),
    ],
)
def test_permanent_client_errors(
    server: GeminiLoopbackServer, fault: Fault, exc_type: type[Exception], code: int, name: str
) -> None:
    server.plan(fault)

    with pytest.raises(exc_type) as excinfo:
        make_llm(server).invoke("hi")

    assert getattr(excinfo.value, "is_retryable", None) is False
    cause = excinfo.value.__cause__
    assert isinstance(cause, genai_errors.ClientError)
    assert (cause.code, cause.status) == (code, name)
    if fault.message:
        assert cause.message == fault.message


@pytest.mark.parametrize(
    ("fault", "code", "echo"),
    [
        (Fault.permission_denied_echoing_key(), 403, f"API key {API_KEY} is not allowed"),
        (Fault.not_found_echoing_key(), 404, f":generateContent?key={API_KEY}"),
    ],
    ids=["403", "404"],
)
def test_faults_that_echo_the_key_the_client_sent(
    server: GeminiLoopbackServer, fault: Fault, code: int, echo: str
) -> None:
    server.plan(fault)

    with pytest.raises(ChatGoogleGenerativeAIError) as excinfo:
        make_llm(server).invoke("hi")

    cause = excinfo.value.__cause__
    assert isinstance(cause, genai_errors.ClientError) and cause.code == code
    assert cause.message is not None and cause.message.endswith(echo)
    assert "{api_key}" not in fault.error_json("k")["error"]["message"]


def test_hang_times_out_and_stop_is_prompt() -> None:
    server = GeminiLoopbackServer().start()
    try:
        server.plan(Fault.hang(5.0))
        llm = make_llm(server, timeout=0.5)
        started = time.monotonic()
        # Not wrapped by langchain: httpx's ReadTimeout under google-genai 2, httpx2's under 3.
        with pytest.raises(Exception) as raised:
            llm.invoke("hi")
        assert type(raised.value).__name__ == "ReadTimeout"
        assert is_transient(raised.value)
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 2.0
    finally:
        stop_started = time.monotonic()
        server.stop()
    assert time.monotonic() - stop_started < 1.0


def test_hang_shorter_than_timeout_answers_normally(server: GeminiLoopbackServer) -> None:
    server.plan(Fault.hang(0.2))

    started = time.monotonic()
    msg = make_llm(server, timeout=5).invoke("slow")

    assert time.monotonic() - started >= 0.2
    assert msg.content == "Loopback reply to: slow"


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_both_api_versions_are_served(server: GeminiLoopbackServer, version: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    with httpx.Client() as client:
        resp = client.post(f"{server.base_url}/{version}/models/{MODEL}:generateContent", json=body)

    assert resp.status_code == 200
    assert resp.json()["candidates"][0]["content"]["parts"][0]["text"] == "Loopback reply to: hi"
    assert resp.json()["usageMetadata"]["totalTokenCount"] > 0
    assert server.requests[0].path == f"/{version}/models/{MODEL}:generateContent"


def test_unknown_route_is_google_404(server: GeminiLoopbackServer) -> None:
    with httpx.Client() as client:
        resp = client.post(f"{server.base_url}/v1beta/models/{MODEL}:embedContent", json={})

    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == 404
    assert resp.json()["error"]["status"] == "NOT_FOUND"


def test_count_tokens_counts_words_and_punctuation(server: GeminiLoopbackServer) -> None:
    server.plan(Fault(500))  # countTokens is free and never faulted: the plan is left alone
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "Hello, world!"}]},
            {"role": "user", "parts": [{"text": "a_b c3 {x}"}]},
        ]
    }
    with httpx.Client() as client:
        resp = client.post(f"{server.base_url}/v1beta/models/{MODEL}:countTokens", json=body)

    assert resp.status_code == 200
    assert resp.json() == {"totalTokens": 4 + 5}  # Hello , world ! / a_b c3 { x }
    assert [r.prompt_text for r in server.count_requests] == ["Hello, world!\na_b c3 {x}"]
    assert server.requests == [] and server.pending == 1
    server.reset()
    assert server.count_requests == []


def test_fault_error_body_shape() -> None:
    body = Fault.rate_limit(retry_after_s=1.5).error_json()

    assert body["error"]["code"] == 429
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["details"][0]["retryDelay"] == "1.500s"
    assert Fault.rate_limit(retry_after_s=1.5).headers() == {"Retry-After": "2"}
    with pytest.raises(ValueError):
        Fault(200)


# --------------------------------------------------------------------------------------
# Schema examples
# --------------------------------------------------------------------------------------


class Node(BaseModel):
    label: str
    children: list[Node] = []
    parent: Node | None = None


def test_schema_example_terminates_on_recursive_models() -> None:
    value = schema_example(Node.model_json_schema())

    node = Node.model_validate(value)
    assert node.label == "example label"
    assert len(node.children) == 2


def test_schema_example_google_style_schema() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 1},
            "count": {"type": "INTEGER", "minimum": 200},
            "level": {"type": "STRING", "format": "enum", "enum": ["LOW", "HIGH"]},
        },
        "required": ["tags", "count", "level"],
    }

    assert schema_example(schema) == {"tags": ["example tags 1"], "count": 200, "level": "LOW"}


def test_max_in_flight_counts_requests_answered_at_once(server: GeminiLoopbackServer) -> None:
    server.set_default(lambda request: Reply.text_reply("slow", delay_s=1.0))
    llm = make_llm(server)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: llm.invoke("hi").text, range(4)))
    assert replies == ["slow"] * 4
    assert server.max_in_flight == 4
    server.reset()
    llm.invoke("again")
    assert server.max_in_flight == 1  # reset starts the count again
