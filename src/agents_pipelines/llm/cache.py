"""The development cache: a LangChain ``BaseCache`` in a SQLite file.

``config.execution.cache: {ttl_s: N}`` gives each LLM node's chat model this cache
(``cache=``, see ``cached_model``), so a request LangChain has seen within the TTL is
answered from the file instead of Gemini. LangChain keys a lookup by the request's
messages and by ``llm_string``: the model's serialized settings (model, temperature,
max_output_tokens, time-out, base URL; never the key, which it serializes as a reference)
plus the call's kwargs, which hold the JSON schema of a structured call and the tools of
a tool call. A change of prompt, inputs, model, settings, schema or tools is a miss.

A hit is answered with its usage zeroed, so that the ledger, MLflow's span usage and the
span cost all see a call that billed nothing; the original usage travels in the message's
``response_metadata`` under CACHE_HIT, from which the ledger and the trace price what the
hit saved.

Several processes may share the file (a Dagster multiprocess run, two code locations):
SQLite in WAL mode, a busy time-out, and a connection per thread.
Each row stores when it expires; expired rows are ignored and pruned as a cache opens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from langchain_core.caches import BaseCache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, message_to_dict, messages_from_dict
from langchain_core.outputs import ChatGeneration, Generation

from agents_pipelines.redaction import redact, redacting_logger
from agents_pipelines.registry import ProcessRegistry, process_registry
from agents_pipelines.sqlite_damage import is_damaged, set_aside
from agents_pipelines.usage.records import CACHE_HIT

__all__ = [
    "CACHE_FILE",
    "ResponseCache",
    "cached_model",
    "expired_entries",
    "open_cache",
    "take_hit",
]

logger = redacting_logger(__name__)
CACHE_FILE = "llm_cache.sqlite"
_BUSY_TIMEOUT_S = 30.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    generations TEXT NOT NULL
)
"""

# A box, so that a context copied from the one that made it writes where it reads.
# A ContextVar, not data on the reply: see take_hit.
_last_hit: ContextVar[list[dict[str, Any] | None] | None] = ContextVar(
    "agents_pipelines_last_hit", default=None
)


class ResponseCache(BaseCache):
    """Replies to LLM requests, for ``ttl_s`` seconds, in the SQLite file ``path``."""

    def __init__(self, path: Path, ttl_s: float, clock: Callable[[], float] = time.time):
        self.path = path
        self.ttl_s = ttl_s
        self._clock = clock  # what a test sets (ProcessRegistry.cache_clock) to expire entries
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._recovery_note = self._create_or_recover()

    def _create_or_recover(self) -> str | None:
        """Create the table and prune the file; a damaged file (not a database, or a
        corrupt one) is set aside and made anew, as the cache is disposable. Returns the
        warning that says so, or None."""
        try:
            self._create()
            return None
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
                raise
            damage = str(exc)
        if (db := getattr(self._local, "db", None)) is not None:
            db.close()  # bound to the damaged file, which is renamed
        self._local.db = None
        aside = set_aside(self.path)
        self._create()
        moved = f"moved to {aside}" if aside else "replaced by another process"
        note = (
            f"The development cache {self.path} was damaged (SQLite: {damage}): it was "
            f"{moved}, and a new, empty one made. This run's calls were not answered from "
            "the cache. Delete the damaged file once you no longer need it."
        )
        logger.warning("%s", note)
        return note

    def _create(self) -> None:
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            db.execute(_SCHEMA)
        self.prune()

    def take_recovery_note(self) -> str | None:
        """The warning of a damaged file set aside as this cache opened, once: for the run
        that opened it to report."""
        note, self._recovery_note = self._recovery_note, None
        return note

    def lookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        now = self._clock()
        with self._connect() as db:
            row = db.execute(
                "SELECT generations FROM responses WHERE key = ? AND expires_at > ? "
                "AND stored_at > ?",
                (_key(prompt, llm_string), now, now - self.ttl_s),
            ).fetchone()
        if row is None:
            _note_hit(None)
            return None
        generations = [_as_hit(stored) for stored in json.loads(row[0])]
        _note_hit(_original_usage(generations))
        return generations

    def update(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        now = self._clock()
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                (_key(prompt, llm_string), now, now + self.ttl_s, _dump(return_val)),
            )

    # On LangGraph's async path (a map node's items) LangChain awaits these. BaseCache's
    # own run the lookup on a thread, in a copy of the context, where the hit it notes for
    # take_hit() would be lost; a lookup is a local SQLite read (0.3 ms), made in place.
    async def alookup(self, prompt: str, llm_string: str) -> Sequence[Generation] | None:
        return self.lookup(prompt, llm_string)

    async def aupdate(self, prompt: str, llm_string: str, return_val: Sequence[Generation]) -> None:
        self.update(prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM responses")

    def prune(self) -> int:
        """Delete the expired rows (each by the TTL of the run that wrote it)."""
        with self._connect() as db:
            return db.execute(
                "DELETE FROM responses WHERE expires_at <= ?", (self._clock(),)
            ).rowcount

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection. Kept open: closing the file's last connection
        checkpoints the WAL with an fsync, and with a connection per update an update took
        14 ms; with one kept, and no fsync per commit (WAL stays consistent; a power cut
        may lose the last replies, which a cache can afford), 0.3 ms (measured)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S)
            db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
        return db


def _key(prompt: str, llm_string: str) -> str:
    return hashlib.sha256(f"{llm_string}\0{_sent(prompt)}".encode()).hexdigest()


# Parts of a message LangChain serializes but never sends to the model: a reply that went
# back into a conversation (a tool loop) would otherwise key differently once it came
# from the cache, with its usage zeroed.
_NOT_SENT = ("usage_metadata", "response_metadata", "id")


def _sent(prompt: str) -> str:
    """``prompt`` (LangChain's serialized messages) without what is not sent."""
    try:
        messages = json.loads(prompt)
    except ValueError:
        return prompt
    for message in messages if isinstance(messages, list) else ():
        kwargs = message.get("kwargs") if isinstance(message, dict) else None
        if isinstance(kwargs, dict):
            for name in _NOT_SENT:
                kwargs.pop(name, None)
    return json.dumps(messages, sort_keys=True)


def _original_usage(generations: Sequence[Generation]) -> dict[str, Any]:
    message = getattr(generations[0], "message", None) if generations else None
    hit = (getattr(message, "response_metadata", None) or {}).get(CACHE_HIT)
    return dict(hit["usage"]) if isinstance(hit, dict) else {}


def _note_hit(original_usage: dict[str, Any] | None) -> None:
    box = _last_hit.get()
    if box is None:
        _last_hit.set([original_usage])
    else:
        box[0] = original_usage


def share_hits() -> None:
    """Give this context a box for the last hit that the contexts copied from it write to.
    LangChain's async path looks the cache up in a task of its own (a copy of the
    caller's context) and ends the call, where the span processor runs, in the caller's."""
    _last_hit.set([None])


def take_hit() -> dict[str, Any] | None:
    """The original usage of the reply the cache gave last in this context, once; None if
    the last lookup missed or was taken. MLflow converts a reply to OpenAI's format before
    the span processor (tracking.span_policy) sees it, which drops response_metadata; the
    processor runs on the thread, and in the context, of the call, right after it.

    Why a ContextVar rather than data: the processor is MLflow's (``configure(span_
    processors=...)``) and is given the span only; the span carries neither the reply's
    metadata nor LangChain's run id, so no record (the ledger's included) can be matched to
    it. The context is what the call and its span's end share."""
    box = _last_hit.get()
    if box is None:
        return None
    hit, box[0] = box[0], None
    return hit


def _dump(generations: Sequence[Generation]) -> str:
    """Chat replies as LangChain's message dicts (a plain text Generation is kept as text),
    redacted: a reply may repeat an API key, and the file outlives the run."""
    return redact(
        json.dumps(
            [
                {"message": message_to_dict(g.message), "info": g.generation_info}
                if isinstance(g, ChatGeneration)
                else {"text": g.text, "info": g.generation_info}
                for g in generations
            ]
        )
    )


def _as_hit(stored: dict[str, Any]) -> Generation:
    """A stored reply with no usage, its original usage kept under CACHE_HIT."""
    if "message" not in stored:
        return Generation(text=stored["text"], generation_info=stored["info"])
    (message,) = messages_from_dict([stored["message"]])
    if not isinstance(message, AIMessage):
        return ChatGeneration(message=message, generation_info=stored["info"])
    original = dict(message.usage_metadata or {})
    zero = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    metadata = {**message.response_metadata, CACHE_HIT: {"usage": original}}
    hit = message.model_copy(update={"usage_metadata": zero, "response_metadata": metadata})
    return ChatGeneration(message=hit, generation_info=stored["info"])


def expired_entries(path: Path, before: float, delete: bool) -> int:
    """How many entries of the cache file ``path`` were stored before ``before`` (Unix
    seconds), whatever their TTL; deleted when ``delete``. 0 if there is no such file."""
    if not path.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S)) as db, db:
        if not delete:
            query = "SELECT COUNT(*) FROM responses WHERE stored_at < ?"
            return int(db.execute(query, (before,)).fetchone()[0])
        return db.execute("DELETE FROM responses WHERE stored_at < ?", (before,)).rowcount


def open_cache(
    folder: Path, ttl_s: float, registry: ProcessRegistry | None = None
) -> ResponseCache:
    """The cache of ``folder`` for ``ttl_s``; one object per pair in ``registry`` (by
    default the process's), so that the models bound to it (and the compiled graphs
    holding them) are reused between runs."""
    registry = registry or process_registry()
    key = (folder.resolve() / CACHE_FILE, float(ttl_s))
    with registry.caches_lock:
        if (cache := registry.response_caches.get(key)) is None:
            cache = ResponseCache(*key, clock=registry.cache_clock)
            registry.response_caches[key] = cache
        else:
            cache.prune()
    return cache


def cached_model(
    model: BaseChatModel, cache: ResponseCache, registry: ProcessRegistry | None = None
) -> BaseChatModel:
    """``model`` answering from ``cache`` first: a shallow copy, sharing its HTTP client.

    The same copy each time (kept in ``registry`` by identity; the entry holds both, so
    the ids cannot be reused), so that graph.builder reuses the compiled graph that holds
    it."""
    registry = registry or process_registry()
    key = (id(model), id(cache))
    with registry.caches_lock:
        if (entry := registry.cached_models.get(key)) is None:
            entry = (model, cache, model.model_copy(update={"cache": cache}))
            registry.cached_models[key] = entry
    return entry[2]
