"""Reading a cassette file safely: its type and size first, then line by line.

A cassette path comes from the environment (AGENTS_PIPELINES_CASSETTE), so it may name
anything. Before this module, a directory or a file that is not UTF-8 gave a traceback, a
FIFO hung the run at ``open``, and ``/dev/zero`` grew to 23.9 GB of RSS. Now the file is
opened without blocking (``O_NONBLOCK``: a FIFO with no writer opens at once), checked to
be a regular file no larger than MAX_CASSETTE_BYTES, then read one line at a time, each
decoded on its own so that a bad byte is named by its line.

The usage a cassette answers with is priced as if Gemini had said it, so it is checked
too (``implausible_usage``): 10**15 prompt tokens would be billed as $2.8 billion.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents_pipelines.errors import CassetteError

__all__ = [
    "MAX_CASSETTE_BYTES",
    "MAX_PLAUSIBLE_TOKENS",
    "cassette_lines",
    "check_recordable",
    "implausible_usage",
    "implausible_usage_error",
]

# A recorded exchange is 1 to 5 KB (the examples' cassettes): 100 MB is over 20,000 of them.
MAX_CASSETTE_BYTES = 100 * 2**20
# Twice the largest context window of any Gemini model (2,097,152 tokens, Gemini 1.5 Pro):
# no call reports more of any kind of token.
MAX_PLAUSIBLE_TOKENS = 2 * 2_097_152
_RECORD_AGAIN = "Fix: delete the cassette and record it again (do not edit its usage by hand)."


def cassette_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of the cassette at ``path``. Raises CassetteError
    for a path that is not a regular file, one over MAX_CASSETTE_BYTES, and a line that is
    not UTF-8; FileNotFoundError for a missing file."""
    with _open_regular(path) as file:
        read = 0
        for number, raw in enumerate(file, 1):
            read += len(raw)
            if read > MAX_CASSETTE_BYTES:  # it grew after the check
                raise _too_large(path, read)
            yield number, _decoded(path, number, raw)


def check_recordable(path: Path) -> None:
    """Recording appends to ``path``: refuse one that exists and is not a regular file (a
    directory would raise at the first call, a FIFO with no reader would hang it)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise CassetteError(
            f"Cassette {path} is {_kind(mode)}, not a file: a recording cannot append to it. "
            "Fix: point AGENTS_PIPELINES_CASSETTE at a .jsonl file, or at a path not taken."
        )


def _open_regular(path: Path) -> Any:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CassetteError(
            f"Cassette {path} cannot be opened ({exc.strerror}). Fix: point "
            "AGENTS_PIPELINES_CASSETTE at a readable .jsonl file."
        ) from None
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise CassetteError(
                f"Cassette {path} is {_kind(info.st_mode)}, not a file. Fix: point "
                "AGENTS_PIPELINES_CASSETTE at a .jsonl file that a recording wrote."
            )
        if info.st_size > MAX_CASSETTE_BYTES:
            raise _too_large(path, info.st_size)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _too_large(path: Path, size: int) -> CassetteError:
    return CassetteError(
        f"Cassette {path} holds {size} bytes, over the {MAX_CASSETTE_BYTES} a cassette may "
        "hold. Fix: record fewer runs into one cassette (one per workflow or dataset)."
    )


def _decoded(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CassetteError(
            f"{path}:{number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
            f"{exc.start + 1}). Fix: a recording writes UTF-8 JSON lines; delete the line, "
            "or the cassette, and record again."
        ) from None


def implausible_usage(response: dict[str, Any]) -> str | None:
    """What is wrong with the usageMetadata of a recorded answer (a JSON body, or each
    chunk of a streamed one), in words; None when every count is a plausible one."""
    for usage in _usages(response):
        for name, count in usage.items():
            if not name.endswith("TokenCount"):
                continue
            if isinstance(count, bool) or not isinstance(count, int):
                return f"usageMetadata.{name} is {count!r}, not a whole number"
            if not 0 <= count <= MAX_PLAUSIBLE_TOKENS:
                return (
                    f"usageMetadata.{name} is {count}, outside 0 to {MAX_PLAUSIBLE_TOKENS} "
                    "(twice the largest context window of any Gemini model)"
                )
    return None


def implausible_usage_error(where: str, problem: str) -> CassetteError:
    return CassetteError(
        f"{where}: {problem}; it would be priced as if Gemini had said it. {_RECORD_AGAIN}"
    )


def _usages(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    body = response.get("body")
    if isinstance(body, dict) and isinstance(body.get("usageMetadata"), dict):
        yield body["usageMetadata"]
    text = response.get("text")
    if not isinstance(text, str):
        return
    for line in text.splitlines():  # a streamed answer: server-sent events, JSON chunks
        if not line.startswith("data:"):
            continue
        try:
            chunk = json.loads(line[len("data:") :])
        except json.JSONDecodeError:
            continue  # the SDK reports a broken chunk as it replays
        if isinstance(chunk, dict) and isinstance(chunk.get("usageMetadata"), dict):
            yield chunk["usageMetadata"]
