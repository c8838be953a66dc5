"""Test helpers that ship with the library (like httpx's MockTransport).

``GeminiLoopbackServer`` is a real HTTP server on 127.0.0.1 that speaks the Gemini REST
API, so the real ``ChatGoogleGenerativeAI`` / google-genai client can run offline.
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

__all__ = [
    "BatchRecord",
    "BatchScript",
    "Fault",
    "GeminiLoopbackServer",
    "RecordedRequest",
    "Reply",
    "Usage",
]
