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
* ``POST /v1beta/models/{model}:countTokens`` answered ``{"totalTokens": N}`` by a simple
  rule (``replies.count_tokens``: one token per word and per punctuation mark); these
  requests go to ``server.count_requests``, apart from the calls, and consume no plan.
* The Batch API (``batches``): ``POST .../models/{model}:batchGenerateContent`` (inline
  requests or an uploaded JSONL file), ``GET /v1beta/batches[/ID]``, ``POST
  /v1beta/batches/ID:cancel``, ``DELETE /v1beta/batches/ID``, the resumable upload at
  ``/upload/v1beta/files`` and ``GET /v1beta/files/ID:download``. ``server.plan_batches``
  scripts a job's states; its items are answered from the plan, like calls.
* A request's ``serviceTier`` (``flex``, ``priority``; left out: standard) is answered
  with the tier that served it in ``usageMetadata.serviceTier`` and
  ``usageMetadata.trafficType`` (``ON_DEMAND``, ``ON_DEMAND_FLEX``, ``ON_DEMAND_PRIORITY``);
  ``Reply(served_tier=...)`` answers another (a priority request downgraded to standard).
* Errors use Google's shape ``{"error": {"code", "message", "status", "details"}}``.

Modules: ``server`` (HTTP and the answer queue), ``faults`` (planned failures in Google's
error shape), ``replies`` (answers, recorded requests, the built-in default and the wire
form). JSON-mode defaults come from ``agents_pipelines.schema_sample``, which the simulated
backend shares.

Example::

    with GeminiLoopbackServer() as server:
        server.plan(Fault.rate_limit(retry_after_s=2), Reply.text_reply("hello"))
        llm = ChatGoogleGenerativeAI(
            model="gemini-2.5-flash", google_api_key="test-key", base_url=server.base_url
        )
"""

from agents_pipelines.schema_sample import schema_example
from agents_pipelines.testing.gemini_server.batches import BatchRecord, BatchScript
from agents_pipelines.testing.gemini_server.faults import Fault
from agents_pipelines.testing.gemini_server.replies import (
    RecordedRequest,
    Reply,
    Usage,
    default_reply,
)
from agents_pipelines.testing.gemini_server.server import GeminiLoopbackServer

__all__ = [
    "BatchRecord",
    "BatchScript",
    "Fault",
    "GeminiLoopbackServer",
    "RecordedRequest",
    "Reply",
    "Usage",
    "default_reply",
    "schema_example",
]
