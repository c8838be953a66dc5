"""Cassette files that are not what a recording writes: refused with a clear error before
they are read whole (a directory, a FIFO, a device, a huge or non-UTF-8 file) or believed
(usage no Gemini call can report), through run_workflow and the CLI with the replay backend."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agents_pipelines.cli import main
from agents_pipelines.errors import CassetteError
from agents_pipelines.llm.cassette_file import MAX_CASSETTE_BYTES, MAX_PLAUSIBLE_TOKENS
from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow
from conftest import LINEAR, write

EXCHANGE = {"request": {"endpoint": "models/gemini-2.5-flash:generateContent", "body": {}}}


def answered_with(usage: dict[str, object]) -> str:
    body = {"candidates": [{"content": {"parts": [{"text": "Cats."}]}}], "usageMetadata": usage}
    return json.dumps({**EXCHANGE, "response": {"status": 200, "body": body}}) + "\n"


def a_directory(tmp_path: Path) -> Path:
    (tmp_path / "cassette.jsonl").mkdir()
    return tmp_path / "cassette.jsonl"


def a_fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "cassette.jsonl")  # nobody writes it: reading it would wait forever
    return tmp_path / "cassette.jsonl"


def dev_zero(tmp_path: Path) -> Path:
    return Path("/dev/zero")  # endless: read whole, it grew to 23.9 GB of RSS


def not_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "cassette.jsonl"
    path.write_bytes(answered_with({"promptTokenCount": 4}).encode() + b'{"node": "caf\xe9"}\n')
    return path


def too_large(tmp_path: Path) -> Path:
    path = tmp_path / "cassette.jsonl"
    with path.open("wb") as file:  # sparse: the size is there, the disk is not used
        file.truncate(MAX_CASSETTE_BYTES + 1)
    return path


def a_quadrillion_tokens(tmp_path: Path) -> Path:
    path = tmp_path / "cassette.jsonl"
    path.write_text(answered_with({"promptTokenCount": 10**15, "totalTokenCount": 10**15}))
    return path


def a_negative_count(tmp_path: Path) -> Path:
    path = tmp_path / "cassette.jsonl"
    path.write_text(
        answered_with({"promptTokenCount": 4}) + answered_with({"thoughtsTokenCount": -5})
    )
    return path


def a_streamed_quadrillion(tmp_path: Path) -> Path:
    chunk = json.dumps({"usageMetadata": {"candidatesTokenCount": 10**15}})
    line = {**EXCHANGE, "response": {"status": 200, "text": f"data: {chunk}\r\n\r\n"}}
    path = tmp_path / "cassette.jsonl"
    path.write_text(json.dumps(line) + "\n")
    return path


CASES: list[tuple[Callable[[Path], Path], str]] = [
    (a_directory, r"Cassette \S+ is a directory, not a file\. Fix: point"),
    (a_fifo, r"Cassette \S+ is a FIFO \(named pipe\), not a file\. Fix: point"),
    (dev_zero, r"Cassette /dev/zero is a character device, not a file\. Fix: point"),
    (not_utf8, r"cassette\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 14\)\. Fix:"),
    (too_large, rf"holds {MAX_CASSETTE_BYTES + 1} bytes, over the {MAX_CASSETTE_BYTES} a"),
    (
        a_quadrillion_tokens,
        rf"cassette\.jsonl:1: usageMetadata\.promptTokenCount is {10**15}, outside 0 to "
        rf"{MAX_PLAUSIBLE_TOKENS} .*Fix: delete the cassette and record it again",
    ),
    (a_negative_count, r"cassette\.jsonl:2: usageMetadata\.thoughtsTokenCount is -5, outside"),
    (a_streamed_quadrillion, r"cassette\.jsonl:1: usageMetadata\.candidatesTokenCount is 1"),
]


@pytest.mark.timeout(30)  # a FIFO once hung here: fail, do not wait for the suite's 300 s
@pytest.mark.parametrize(("make", "message"), CASES, ids=[make.__name__ for make, _ in CASES])
def test_a_cassette_that_is_no_recording_is_refused_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], Path], message: str
) -> None:
    workflow = load_workflow(write(tmp_path, LINEAR))
    monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", "replay")
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(make(tmp_path)))
    with pytest.raises(CassetteError, match=message):
        run_workflow(workflow)


@pytest.mark.timeout(30)
def test_the_cli_names_a_fifo_cassette_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LINEAR)
    monkeypatch.setenv("AGENTS_PIPELINES_CASSETTE", str(a_fifo(tmp_path)))
    for backend in ("replay", "record"):  # recording would append to it: refused as well
        monkeypatch.setenv("AGENTS_PIPELINES_LLM_BACKEND", backend)
        monkeypatch.setenv("GOOGLE_API_KEY", "fake-gemini-key-7f3a9c1e5b")
        assert main(["run", str(path)]) == 1
        err = capsys.readouterr().err
        assert "is a FIFO (named pipe), not a file" in err and "Fix:" in err
        assert "Traceback" not in err
