"""Everything a process keeps between workflow runs, in one object.

A process reuses across its runs what is costly to make again: compiled graphs (about 9 ms
per 3-node run), the development cache's objects and the models bound to them, the
connections to the SQLite stores beside a Dagster instance (9 ms of a 40 ms run), the
checkpoint savers and spend journals on them, MLflow experiment ids, and the "once per
process" checks of the tracking store. They live here, in a ``ProcessRegistry``, rather
than in module-level dicts: the Dagster resource (``WorkflowRunner``) owns the registry its
runs use, a run takes it through ``RunOptions.registry``, and a test starts from a fresh
process's state with one call, ``process_registry().reset()``.

What stays module-level, on purpose (each says why where it is):
- memos of immutable input (``functools.cache`` and ``lru_cache`` on type names, installed
  files, settings), the state validators (graph/state.py), the asset signatures
  (orchestration/asset_factory.py), and the chat models and cassette transports of a
  setting (llm/gemini.py, backend.py, record_replay.py), which keep no run state;
- state that mirrors a process-wide upstream state and would be wrong once reset without
  it: MLflow's span processors (tracking/span_policy.py, trace_outcome.py), the environment
  variables we set (tracking/mlflow_env.py), SQLAlchemy's connect listener
  (tracking/sqlite_store.py), the running event loop (graph/event_loop.py);
- the development cache's last hit (llm/cache.py), a ContextVar: see ``take_hit``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProcessRegistry", "process_registry"]


@dataclass(eq=False)
class ProcessRegistry:
    """The caches one process shares between its runs; each with the lock that guards it.

    Entries hold their keys' objects (a spec, a model) where a key is an ``id()``, so that
    an id cannot be reused while its entry lives."""

    # graph/builder.py: (id(spec), *ids of models) -> (spec, models, compiled graph).
    compiled_graphs: OrderedDict[tuple[int, ...], tuple[Any, tuple[Any, ...], Any]] = field(
        default_factory=OrderedDict
    )
    graphs_lock: threading.Lock = field(default_factory=threading.Lock)
    # workflow_run.py: (id(spec), its registry prompts' versions) -> (spec, the spec pinned
    # to them), so that the runs of one version reuse one pinned spec and its compiled graph.
    pinned_specs: OrderedDict[tuple[int, str], tuple[Any, Any]] = field(default_factory=OrderedDict)
    pins_lock: threading.Lock = field(default_factory=threading.Lock)
    # llm/cache.py: (file, ttl) -> ResponseCache, and (id(model), id(cache)) -> the model
    # answering from that cache.
    response_caches: dict[tuple[Path, float], Any] = field(default_factory=dict)
    cached_models: dict[tuple[int, int], tuple[Any, Any, Any]] = field(default_factory=dict)
    caches_lock: threading.Lock = field(default_factory=threading.Lock)
    # The development cache's clock: a test sets it to expire entries without sleeping.
    cache_clock: Callable[[], float] = time.time
    # orchestration/stores/databases.py: one connection per SQLite file beside an instance.
    sqlite_connections: dict[Path, sqlite3.Connection] = field(default_factory=dict)
    connections_lock: threading.Lock = field(default_factory=threading.Lock)
    # orchestration/stores/checkpoints.py: a saver per SQLite file, the PostgreSQL stores whose
    # tables this process has seen created, and when each (store, TTL) was last pruned.
    checkpoint_savers: dict[Path, Any] = field(default_factory=dict)
    postgres_checkpoints_set_up: set[str] = field(default_factory=set)
    checkpoints_pruned: dict[tuple[str, int], float] = field(default_factory=dict)
    checkpoints_lock: threading.Lock = field(default_factory=threading.Lock)
    # orchestration/stores/spend_journal.py: the spend journal of each SQLite file.
    spend_journals: dict[Path, Any] = field(default_factory=dict)
    journals_lock: threading.Lock = field(default_factory=threading.Lock)
    # tracking/experiments.py: (tracking URI, experiment name) -> experiment id.
    experiment_ids: dict[tuple[str, str], str] = field(default_factory=dict)
    # tracking/stale_runs.py: (tracking URI, experiment id, workflow) already checked.
    stale_runs_checked: set[tuple[str, str, str]] = field(default_factory=set)
    stale_runs_lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget everything, as a new process would start (the files stay): the SQLite
        connections are closed, every cache emptied, the cache clock set back. For tests,
        and for a long-lived process that wants to let go of what its runs kept."""
        fresh = ProcessRegistry()
        with self.connections_lock:
            for conn in self.sqlite_connections.values():
                conn.close()
            self.sqlite_connections.clear()
        for name, value in vars(fresh).items():
            if not name.endswith("_lock"):  # a thread may hold one: the locks stay
                setattr(self, name, value)


# The registry of a process: one instance, reset in place, so that every holder of it (the
# resource, a run's options) sees the reset. A run given another registry uses that one.
_PROCESS_REGISTRY = ProcessRegistry()


def process_registry() -> ProcessRegistry:
    """The registry of this process: what a caller that was given none uses."""
    return _PROCESS_REGISTRY
