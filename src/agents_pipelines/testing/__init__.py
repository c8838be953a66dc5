"""Test helpers that ship with the library (like httpx's MockTransport).

``GeminiLoopbackServer`` is a real HTTP server on 127.0.0.1 that speaks the Gemini REST
API, so the real ``ChatGoogleGenerativeAI`` / google-genai client can run offline.
``OtlpLoopbackReceiver`` is an OpenTelemetry collector's OTLP/HTTP receiver, decoding what
it is sent, so a run's trace and metrics export can be checked offline too.
"""

from agents_pipelines.testing.gemini_server import (
    BatchRecord,
    BatchScript,
    Fault,
    GeminiLoopbackServer,
    RecordedRequest,
    Reply,
    Usage,
)
from agents_pipelines.testing.otlp_receiver import MetricPoint, OtlpLoopbackReceiver, ReceivedSpan

__all__ = [
    "BatchRecord",
    "BatchScript",
    "Fault",
    "GeminiLoopbackServer",
    "MetricPoint",
    "OtlpLoopbackReceiver",
    "ReceivedSpan",
    "RecordedRequest",
    "Reply",
    "Usage",
]
