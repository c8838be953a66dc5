"""google-genai's undocumented details that agents_pipelines uses (google-genai 3.6.1,
httpx2 2.16.2, langchain-google-genai 4.4.3 checked)."""

from __future__ import annotations

import importlib

# sdk_http: the HTTP library whose transports google-genai's client takes (``client_args=
# {"transport": ...}``): httpx2 (a fork of httpx under its own name) in google-genai 3, httpx
# before. Why: our cassette transport (llm/record_replay.py) must subclass that library's
# transport classes. google-genai picks the library from the objects in ``client_args`` and
# defaults to httpx2 when it is installed (undocumented). Public replacement: none.
try:
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - google-genai 2; the lock installs google-genai 3
    import httpx as sdk_http  # type: ignore[no-redef]

__all__ = ["CLIENT_LOGGERS", "sdk_http", "transport_error_types"]

# The client stack's loggers that may write a provider's error text (google-genai logs a
# streamed error it cannot parse at DEBUG) or a request line. Why here: google-genai names
# its loggers after its private modules (``google_genai._api_client``), not documented.
# Public replacement: a filter on the root logger (it would see every library's records).
CLIENT_LOGGERS = (
    "google_genai._api_client",
    "google_genai.models",
    "langchain_google_genai.chat_models",
    "httpx",
    "httpx2",
)


def transport_error_types() -> tuple[type[BaseException], ...]:
    """Time-outs and dropped connections of every HTTP library google-genai may use.

    Why: httpx2's exceptions are not httpx's, and a hung call classified as permanent would
    never be retried. Public replacement: none (google-genai re-raises them as they are).
    """
    found: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found.append(module.TransportError)  # time-outs, connect and read errors
    return tuple(found)
