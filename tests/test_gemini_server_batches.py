"""The loopback server's Batch and Files APIs, driven by google-genai's own ``client.batches``
and ``client.files`` over loopback HTTP (nothing on the client side is mocked)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from agents_pipelines.testing import BatchScript, Fault, GeminiLoopbackServer, Reply, Usage

MODEL = "gemini-2.5-flash"


@pytest.fixture
def server() -> Iterator[GeminiLoopbackServer]:
    with GeminiLoopbackServer() as srv:
        yield srv


@pytest.fixture
def client(server: GeminiLoopbackServer) -> genai.Client:
    return genai.Client(
        api_key="test-key-123", http_options=types.HttpOptions(base_url=server.base_url)
    )


def inline(*prompts: str) -> list[types.InlinedRequest]:
    return [
        types.InlinedRequest(
            contents=[types.Content(role="user", parts=[types.Part(text=text)])],
            metadata={"key": f"item-{i}"},
        )
        for i, text in enumerate(prompts)
    ]


def poll_to_end(client: genai.Client, name: str) -> tuple[types.BatchJob, list[str]]:
    states = []
    for _ in range(10):
        job = client.batches.get(name=name)
        states.append(str(job.state.name if job.state else None))
        if job.done:
            return job, states
    raise AssertionError(f"job {name} never ended: {states}")


def test_inline_job_plays_its_states_and_answers_each_item_with_usage(
    server: GeminiLoopbackServer, client: genai.Client
) -> None:
    server.plan(
        Reply.text_reply("first", usage=Usage(prompt=10, candidates=5, thoughts=0, cached=0))
    )
    created = client.batches.create(
        model=MODEL, src=inline("one", "two"), config={"display_name": "labels"}
    )
    assert created.name == "batches/loopback-1"
    assert created.state == types.JobState.JOB_STATE_PENDING
    assert created.display_name == "labels"
    job, states = poll_to_end(client, created.name)
    assert states == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    responses = job.dest.inlined_responses
    assert [r.metadata for r in responses] == [{"key": "item-0"}, {"key": "item-1"}]
    assert responses[0].response.text == "first"
    assert responses[0].response.usage_metadata.prompt_token_count == 10
    assert responses[1].response.text == "Loopback reply to: two"
    assert responses[1].response.usage_metadata.total_token_count == 205  # Usage()'s default
    # Each item is recorded like a call, tagged with its job.
    assert [r.prompt_text for r in server.requests] == ["one", "two"]
    assert {r.batch for r in server.requests} == {"batches/loopback-1"}
    (record,) = server.batch_jobs
    assert (record.state, record.keys, record.source, record.polls) == (
        "SUCCEEDED",
        ("item-0", "item-1"),
        "inline",
        2,
    )


def test_planned_faults_are_per_item_errors(
    server: GeminiLoopbackServer, client: genai.Client
) -> None:
    server.plan(Reply.text_reply("ok"), Fault.server_error(503), Fault.bad_request("bad item"))
    created = client.batches.create(model=MODEL, src=inline("a", "b", "c"))
    job, _ = poll_to_end(client, created.name)
    responses = job.dest.inlined_responses
    assert responses[0].response.text == "ok" and responses[0].error is None
    assert responses[1].response is None
    assert (responses[1].error.code, responses[1].metadata) == (503, {"key": "item-1"})
    assert responses[2].error.message == "bad item"


def test_structured_output_items_get_schema_documents(
    server: GeminiLoopbackServer, client: genai.Client
) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["good", "bad"]}},
        "required": ["label"],
    }
    request = types.InlinedRequest(
        contents="Label this",
        config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=schema
        ),
    )
    created = client.batches.create(model=MODEL, src=[request])
    job, _ = poll_to_end(client, created.name)
    assert json.loads(job.dest.inlined_responses[0].response.text) == {"label": "good"}
    assert server.requests[0].response_schema == schema


@pytest.mark.parametrize("end", ["FAILED", "EXPIRED"])
def test_failed_and_expired_jobs_answer_nothing(
    server: GeminiLoopbackServer, client: genai.Client, end: str
) -> None:
    server.plan_batches(BatchScript.failing(end, "quota gone"))
    created = client.batches.create(model=MODEL, src=inline("x"))
    job, states = poll_to_end(client, created.name)
    assert states[-1] == f"JOB_STATE_{end}"
    assert job.dest is None
    assert server.requests == []  # no item was answered, so none was paid for


def test_cancel_stops_a_running_job_and_delete_forgets_it(
    server: GeminiLoopbackServer, client: genai.Client
) -> None:
    server.plan_batches(BatchScript.never_done())
    created = client.batches.create(model=MODEL, src=inline("x"))
    assert client.batches.get(name=created.name).state == types.JobState.JOB_STATE_RUNNING
    client.batches.cancel(name=created.name)
    job = client.batches.get(name=created.name)
    assert job.state == types.JobState.JOB_STATE_CANCELLED and job.done
    assert server.batch_jobs[0].cancel_requests == 1
    client.batches.delete(name=created.name)
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.get(name=created.name)
    assert caught.value.code == 404
    assert server.batch_jobs[0].deleted


def test_list_pages_through_the_jobs(server: GeminiLoopbackServer, client: genai.Client) -> None:
    names = [client.batches.create(model=MODEL, src=inline("x")).name for _ in range(3)]
    listed = [job.name for job in client.batches.list(config={"page_size": 2})]
    assert listed == names


def test_file_input_goes_through_the_upload_and_answers_in_a_file(
    server: GeminiLoopbackServer, client: genai.Client
) -> None:
    server.plan(Reply.json_reply({"n": 1}), Fault.rate_limit())
    lines = [
        {"key": "k-a", "request": {"contents": [{"role": "user", "parts": [{"text": "A"}]}]}},
        {"key": "k-b", "request": {"contents": [{"role": "user", "parts": [{"text": "B"}]}]}},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.upload(
        file=io.BytesIO(data), config={"mime_type": "application/jsonl", "display_name": "in"}
    )
    assert uploaded.name is not None and uploaded.size_bytes == len(data)
    created = client.batches.create(model=MODEL, src=uploaded.name)
    job, _ = poll_to_end(client, created.name)
    assert job.dest.file_name is not None and job.dest.inlined_responses is None
    out = [json.loads(line) for line in client.files.download(file=job.dest.file_name).splitlines()]
    assert [line["key"] for line in out] == ["k-a", "k-b"]
    assert out[0]["response"]["candidates"][0]["content"]["parts"][0]["text"] == '{"n": 1}'
    assert out[1]["error"]["code"] == 429
    assert server.batch_jobs[0].source == "file"


def test_inline_requests_past_the_limit_are_refused(
    server: GeminiLoopbackServer, client: genai.Client
) -> None:
    server.inline_batch_limit_bytes = 2_000
    with pytest.raises(genai_errors.ClientError) as caught:
        client.batches.create(model=MODEL, src=inline("word " * 1_000))
    assert caught.value.code == 400 and "fileName" in str(caught.value)
    assert server.batch_jobs == []
