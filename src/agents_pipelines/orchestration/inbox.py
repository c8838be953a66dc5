"""Which files of a sensor's inbox a tick reads, in what order, and a cursor that says where
the last tick got to, in a bounded size however many files it has seen.

Files are taken in the order of (change time, path), the change time being the later of a
file's ``st_mtime`` and ``st_ctime``: a write, an append, a rename or a move into the folder
sets it (a move keeps ``st_mtime``, so mtime alone would pass over a file written earlier
elsewhere). A tick lists the folder (a stat per file, never a read) and reads at most
``limit`` files above the cursor's watermark, oldest first; the rest wait for the next tick.

The cursor holds:

- ``after``, the watermark: every file that sorts at or below it has been handled (its runs
  requested, or its problem reported once). A file changed since gets a later change time.
- ``recent``: the files handled above the watermark. The watermark stays ``SETTLE_NS``
  behind the tick, as file systems stamp change times from a coarse clock (1 to 10 ms), so
  a file written just after a listing may carry the time of a file the listing saw.
- ``digests``: the SHA-256 of the last ``RECENT_DIGESTS`` files read: a renamed or touched
  file, read again, is not run again.
- ``lines``: for the last ``RECENT_JSONL`` JSONL files, the bytes handled and their SHA-256:
  appended lines run, the lines before them do not.

Past these memories, run keys do not change (a file's digest; a JSONL line's is the digest
of the file up to and including that line), and Dagster drops a run request whose key has
already run. A cursor of the earlier form (every digest seen) is read once and dropped once
the watermark has passed the files it covered.
"""

from __future__ import annotations

import glob
import hashlib
import heapq
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path
from typing import Any

from agents_pipelines.orchestration.inbox_inputs import InputFileError, InputRecord, is_jsonl
from agents_pipelines.spec.files import UnreadableFileError, read_limited

__all__ = ["Found", "InboxCursor", "InboxTick", "scan_inbox"]

SETTLE_NS = 2_000_000_000
RECENT_DIGESTS = 512  # 34 KB of cursor
RECENT_JSONL = 64

Key = tuple[int, str]  # (change time in ns, path)
# (path, its bytes, the byte to start from) -> the inputs it holds from there
Reader = Callable[[Path, bytes, int], list[InputRecord]]


@dataclass
class InboxCursor:
    after: Key | None = None
    recent: set[Key] = field(default_factory=set)
    digests: list[str] = field(default_factory=list)
    lines: dict[str, tuple[int, str]] = field(default_factory=dict)
    legacy: frozenset[str] = frozenset()
    legacy_until: int | None = None

    @classmethod
    def from_json(cls, text: str | None) -> InboxCursor:
        value = json.loads(text) if text else {}
        if isinstance(value, list):  # the earlier form: the digest of every file seen
            return cls(legacy=frozenset(value))
        after = value.get("after")
        return cls(
            after=(after[0], after[1]) if after else None,
            recent={(ns, name) for ns, name in value.get("recent", [])},
            digests=list(value.get("digests", [])),
            lines={name: (done, digest) for name, (done, digest) in value.get("lines", {}).items()},
            legacy=frozenset(value.get("legacy", [])),
            legacy_until=value.get("legacy_until"),
        )

    def to_json(self) -> str:
        value: dict[str, Any] = {
            "after": list(self.after) if self.after else None,
            "recent": sorted(self.recent),
            "digests": self.digests[-RECENT_DIGESTS:],
            "lines": dict(list(self.lines.items())[-RECENT_JSONL:]),
        }
        if self.legacy:
            value |= {"legacy": sorted(self.legacy), "legacy_until": self.legacy_until}
        return json.dumps(value, separators=(",", ":"))

    def seen(self, digest: str) -> bool:
        return digest in self.legacy or digest in self.digests

    def remember(self, digest: str) -> None:
        self.digests = [*self.digests[-(RECENT_DIGESTS - 1) :], digest]

    def remember_lines(self, name: str, raw: bytes) -> None:
        self.lines.pop(name, None)  # last in, last out
        self.lines[name] = (len(raw), hashlib.sha256(raw).hexdigest())
        if len(self.lines) > RECENT_JSONL:
            del self.lines[next(iter(self.lines))]

    def resume_at(self, name: str, raw: bytes) -> int:
        """Where the lines not yet handled start: past the bytes handled before, if the
        file still begins with them (it was appended to), else at the start."""
        done, digest = self.lines.get(name, (0, ""))
        if done and hashlib.sha256(raw[:done]).hexdigest() == digest:
            return done
        return 0


@dataclass(frozen=True)
class Found:
    """One input to run."""

    path: Path
    run_key: str
    inputs: dict[str, Any]
    line: int | None


@dataclass
class InboxTick:
    found: list[Found]
    problems: list[tuple[Path, str]]
    cursor: InboxCursor
    waiting: bool  # files were left for the next tick


def scan_inbox(
    pattern: str, cursor: InboxCursor, read: Reader, *, limit: int, now_ns: int
) -> InboxTick:
    """Reads at most ``limit`` files above the cursor's watermark, oldest first, and finds
    at most ``limit`` inputs in them; ``cursor`` is moved on past what was handled."""
    horizon: Key = (now_ns - SETTLE_NS, "")
    if cursor.legacy and cursor.legacy_until is None:
        cursor.legacy_until = horizon[0]
    tick = InboxTick([], [], cursor, waiting=False)
    listed = limit + len(cursor.recent)
    candidates = heapq.nsmallest(listed, _listing(pattern, cursor.after))
    root = inbox_root(pattern)
    handled_through = cursor.after
    examined = 0
    for key in candidates:
        if key in cursor.recent:
            handled_through = key
            continue
        if examined == limit or len(tick.found) == limit:
            tick.waiting = True
            break
        examined += 1
        if not _handle(Path(key[1]), root, tick, read, limit):
            tick.waiting = True
            break
        handled_through = key
        if key > horizon:
            cursor.recent.add(key)
    if not tick.waiting and len(candidates) < listed:
        handled_through = horizon  # every file above the watermark was handled
    _advance(cursor, handled_through, horizon)
    return tick


def _advance(cursor: InboxCursor, handled_through: Key | None, horizon: Key) -> None:
    if handled_through is not None:
        passed = min(handled_through, horizon)
        cursor.after = passed if cursor.after is None else max(cursor.after, passed)
    after = cursor.after
    cursor.recent = {key for key in cursor.recent if after is None or key > after}
    if cursor.legacy and after is not None and (cursor.legacy_until or 0) <= after[0]:
        cursor.legacy, cursor.legacy_until = frozenset(), None


def _listing(pattern: str, after: Key | None) -> Iterator[Key]:
    for name in glob.iglob(pattern):
        try:
            info = os.lstat(name)
        except OSError:  # removed since the listing
            continue
        if stat.S_ISDIR(info.st_mode):
            continue  # a subfolder, such as one for processed files
        key = (max(info.st_mtime_ns, info.st_ctime_ns), name)
        if after is None or key > after:
            yield key


def inbox_root(pattern: str) -> str:
    """The folder the glob cannot leave: its parts before the first wildcard."""
    parts = Path(pattern).parts
    fixed = list(takewhile(lambda part: not glob.has_magic(part), parts))
    if len(fixed) == len(parts):
        fixed = fixed[:-1]
    return os.path.realpath(os.path.join(*fixed) if fixed else ".")


def _handle(path: Path, root: str, tick: InboxTick, read: Reader, limit: int) -> bool:
    """Requests the inputs of ``path`` (up to the limit), or reports why it is skipped.
    False when the limit cut the file short."""
    try:
        raw = read_limited(_inside(path, root), follow_links=False)
    except UnreadableFileError as exc:
        tick.problems.append((path, exc.problem))
        return True
    digest = hashlib.sha256(raw).hexdigest()
    cursor = tick.cursor
    if cursor.seen(digest):
        return True
    start = cursor.resume_at(str(path), raw) if is_jsonl(path) else 0
    try:
        records = read(path, raw, start)
    except InputFileError as exc:
        tick.problems.append((path, str(exc)))
        records = []
    room = limit - len(tick.found)
    tick.found += _found(path, raw, digest, start, records[:room])
    if len(records) > room:
        cursor.remember_lines(str(path), raw[: records[room - 1].end])
        return False
    cursor.remember(digest)
    if is_jsonl(path):
        cursor.remember_lines(str(path), raw)
    return True


def _inside(path: Path, root: str) -> Path:
    """The real path of ``path``, which must lie in the inbox: a link out of it is refused
    before anything is read (its contents would reach the tick's log)."""
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root:
        raise UnreadableFileError(
            f"it is a symbolic link, or lies under one, that leads out of the inbox {root}",
            "copy the file into the inbox instead of linking to it",
        )
    return Path(real)


def _found(
    path: Path, raw: bytes, digest: str, start: int, records: list[InputRecord]
) -> list[Found]:
    if not is_jsonl(path):
        return [Found(path, digest, record.inputs, None) for record in records]
    prefix = hashlib.sha256(raw[:start])
    found = []
    for record in records:  # a line's key: the digest of the file up to and including it
        prefix.update(raw[start : record.end])
        start = record.end
        found.append(Found(path, prefix.hexdigest(), record.inputs, record.line))
    return found
