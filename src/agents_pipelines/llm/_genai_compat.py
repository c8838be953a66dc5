"""The private names of langchain-google-genai and google-genai that batch mode uses, in one
place. Checked against langchain-google-genai 4.x and google-genai 3.x; each hook says which
public API would replace it. ``tests/test_batch_mode.py::test_compat_hooks_exist`` fails and
names the hook when upstream moves one.

- ``ChatGoogleGenerativeAI._prepare_request``: the request an interactive call would send
  (contents, system instruction, JSON mode), so that a batched request is the same one.
  No public equivalent: the alternative is converting messages ourselves.
- ``langchain_google_genai.chat_models._response_to_result``: a GenerateContentResponse as
  LangChain's ChatResult (text, usage_metadata), exactly as the interactive call returns it.
- ``google.genai.batches._BatchJob_from_mldev`` and the client's ``_api_client``: one GET of
  a job that keeps ``metadata.batchStats`` (done/total), which ``client.batches.get`` drops
  in Gemini Developer API mode. A public ``BatchJob.completion_stats`` there would replace it.
- ``google.genai.batches._InlinedRequest_to_mldev``: an inline request in the REST shape of
  a JSONL input line. No public converter exists.
"""

from __future__ import annotations

import json
from typing import Any

from google.genai import types
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult

HOOKS = (
    "langchain_google_genai.ChatGoogleGenerativeAI._prepare_request",
    "langchain_google_genai.chat_models._response_to_result",
    "google.genai.batches._BatchJob_from_mldev",
    "google.genai.batches._InlinedRequest_to_mldev",
    "google.genai.client.Client._api_client",
)


def prepare_request(model: Any, messages: list[BaseMessage], **kwargs: Any) -> dict[str, Any]:
    """``{"model", "contents", "config"}`` as ``model`` (a ChatGoogleGenerativeAI) would
    send them for ``messages`` and the call's keyword arguments."""
    request: dict[str, Any] = model._prepare_request(messages, **kwargs)
    return request


def response_to_result(response: types.GenerateContentResponse) -> ChatResult:
    from langchain_google_genai.chat_models import _response_to_result

    return _response_to_result(response)


async def get_job_with_stats(
    client: Any, name: str, *, sync: bool
) -> tuple[types.BatchJob, dict[str, int]]:
    """The job ``name`` and its ``batchStats`` (requestCount, successfulRequestCount,
    failedRequestCount, pendingRequestCount), in one GET. ``client`` is a google-genai
    Client; ``sync`` sends the GET on its sync HTTP client (a thread with no event loop)."""
    from google.genai.batches import _BatchJob_from_mldev

    if sync:
        response = client._api_client.request("get", name, {}, None)
    else:
        response = await client._api_client.async_request("get", name, {}, None)
    body = json.loads(response.body) if response.body else {}
    stats = (body.get("metadata") or {}).get("batchStats") or {}
    job = types.BatchJob._from_response(response=_BatchJob_from_mldev(body), kwargs={})
    return job, {key: int(value) for key, value in stats.items()}


def jsonl_request(client: Any, request: types.InlinedRequest) -> dict[str, Any]:
    """``request`` in the REST shape of a batch input file's ``request`` (camelCase,
    ``generationConfig``), as the SDK converts an inline request."""
    from google.genai.batches import _InlinedRequest_to_mldev

    body: dict[str, Any] = _InlinedRequest_to_mldev(client._api_client, request)
    request_body: dict[str, Any] = body.get("request", {})
    return request_body
