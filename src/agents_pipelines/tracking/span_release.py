"""A run's trace streamed to the store: its spans leave memory once stored.

MLflow keeps every span of a trace in its trace manager until the root span ends, and its
SQL store (``SqlAlchemyStore._log_spans_once``, MLflow 3.17.2 checked), for each span batch
of a trace it holds and has not finalized, reads back every stored span of the trace to
recompute its tokens and cost: memory O(N) and store reads O(N²) for an N-span trace (a
10,000-item map peaked at 639 MB and logged "database is locked").

For a run's own trace (``track``):

- before the first batch that carries usage (or cost) is written to a SQL store, the
  trace's info is written (``start_trace``) with the totals released so far: the store
  then holds the trace as finalized with its tokens and cost set, and takes each later
  batch as it is (no read back). On a tracking server, whose store is not known here,
  this happens after the first such batch was stored;
- once the store has taken a batch, its ended child spans leave MLflow's trace manager
  (``_compat.mlflow.release_ended_spans``); their usage, cost and JSON size are summed;
- when the run ends (``close``, before the root span ends), nothing more is released, and
  ``complete`` adds to the trace info MLflow writes last what was released: tokens, cost
  and size stats as if every span had stayed.

A store that cannot log spans (a file store) never takes a batch: nothing is released.
A run killed mid-trace leaves its stored spans, and the trace info written early: its
tokens and cost are those released before that write (none on a SQL store, where it comes
before the first call's span). stale_runs.py sums such a trace's stored spans instead.
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents_pipelines._compat import mlflow as compat
from agents_pipelines.redaction import redacting_logger

logger = redacting_logger(__name__)


@dataclass
class _Trace:
    closed: bool = False  # the run ended: its spans stay for MLflow to assemble the trace
    info_at_close: Any = None  # its info then: MLflow drops it once the root span ends
    completed: bool = False  # MLflow is writing its last info: no early write after that
    written: frozenset[str] = frozenset()  # "usage", "cost": set in the info written early
    writing: threading.Lock = field(default_factory=threading.Lock)  # one early write at once
    released: int = 0  # spans taken out of MLflow's trace manager
    released_bytes: int = 0  # their JSON size
    usage: dict[str, int] = field(default_factory=dict)  # their token usage, summed
    cost: dict[str, float] = field(default_factory=dict)  # their cost (USD), summed
    sizes: array[int] = field(default_factory=lambda: array("q"))  # every stored span's
    ended: int = 0  # spans ended (handed to the exporter)
    settled: int = 0  # spans the store has taken, or refused
    unsupported: bool = False  # the store cannot log spans (a file store)


# Module-level: fed by MLflow's process-wide span exporter (trace_outcome.py).
_lock = threading.Lock()
_traces: dict[str, _Trace] = {}


def track(trace_id: str) -> None:
    """Release the spans of ``trace_id`` as the store takes them (a run's own trace)."""
    with _lock:
        _traces[trace_id] = _Trace()


def close(trace_id: str) -> None:
    """The run of ``trace_id`` ended (its root span is about to end): the spans still in
    MLflow's trace manager stay there, and the stubs of released ones go."""

    info = compat.trace_info_now(trace_id)

    def mark_closed(held: bool) -> None:
        with _lock:
            if not held:  # MLflow will not export it (a no-op trace): nothing to complete
                _traces.pop(trace_id, None)
            elif (trace := _traces.get(trace_id)) is not None:
                trace.closed, trace.info_at_close = True, info

    compat.drop_released_spans(trace_id, then=mark_closed)


# A run's spans ended but not stored yet, past which its map waits before the next wave
# (``wait_for_store``): with calls faster than the store writes (the simulated backend at
# zero latency), the exporter's backlog would otherwise grow with the items. 500 spans
# (about 2 MB, plus one wave's): with 2,000, how full the backlog was at the peak varied by
# several MB from run to run, and rose with the items up to 6,000 (benchmark 7, 2,000 and
# 6,000 items: 1.1 MB per 1,000 items above untracked); a 2,000-item map took as long
# with 500 as with 1,000 (42 to 46 s against 39 to 46 s at zero latency, store-bound).
BACKLOG_SPANS = 500
# A store that took no batch for this long has stopped taking them: no more waiting.
STALL_S = 5.0


def ended(trace_id: str) -> None:
    """A span of ``trace_id`` ended (our span processor, span_policy.py)."""
    with _lock:
        if (trace := _traces.get(trace_id)) is not None:
            trace.ended += 1


def not_stored(spans: list[Any], *, unsupported: bool = False) -> None:
    """The store refused ``spans``: they no longer wait for it. ``unsupported``: it cannot
    log spans at all (MLflow's exporter stops sending them), so nothing is waited for."""
    for trace_id, trace_spans in _by_trace(spans).items():
        with _lock:
            if (trace := _traces.get(trace_id)) is not None:
                trace.settled += len(trace_spans)
                trace.unsupported = trace.unsupported or unsupported


def wait_for_store(trace_id: str, backlog: int | None = None) -> float:
    """Wait until no more than ``backlog`` (default ``BACKLOG_SPANS``) ended spans of
    ``trace_id`` wait for the store; the seconds waited. Not at all with a store that
    cannot log spans, and no longer once the store took none for ``STALL_S``: tracking
    never holds a run up for long."""
    limit = BACKLOG_SPANS if backlog is None else backlog
    started = last_change = time.monotonic()
    last = -1
    while True:
        with _lock:
            trace = _traces.get(trace_id)
            if trace is None or trace.unsupported or trace.ended - trace.settled <= limit:
                return time.monotonic() - started
            settled = trace.settled
        now = time.monotonic()
        if settled != last:
            last, last_change = settled, now
        elif now - last_change >= STALL_S:
            return now - started
        time.sleep(0.05)


def before_stored(client: Any, spans: list[Any]) -> None:
    """``spans`` are about to be stored through ``client`` (MLflow's TracingClient). On a
    SQL store, a tracked trace's info is written first if they bring usage or cost it
    has not been written with: the store then never recomputes the trace's totals."""
    if not _sql_store(client):
        return
    for trace_id, trace_spans in _by_trace(spans).items():
        with _lock:
            trace = _traces.get(trace_id)
            if trace is None or trace.written == _BOTH:
                continue
        _write_info_early(client, trace_id, trace, _carried(trace_spans))


def after_stored(client: Any, spans: list[Any]) -> None:
    """``spans`` were stored through ``client``: those of tracked traces are released. On
    another store (a tracking server), a trace's info is written once what was released
    has usage or cost (the store took a batch of spans, so it can take them)."""
    for trace_id, trace_spans in _by_trace(spans).items():
        with _lock:
            trace = _traces.get(trace_id)
            if trace is not None:
                trace.settled += len(trace_spans)
        if trace is None:
            continue
        _release(trace_id, trace, trace_spans)
        if not _sql_store(client):
            with _lock:
                carried = {"usage"} if trace.usage else set()
                carried |= {"cost"} if trace.cost else set()
            _write_info_early(client, trace_id, trace, frozenset(carried))


def _by_trace(spans: list[Any]) -> dict[str, list[Any]]:
    by_trace: dict[str, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    return by_trace


def _sql_store(client: Any) -> bool:
    scheme = str(getattr(client, "tracking_uri", "")).split(":", 1)[0].split("+", 1)[0]
    return scheme in ("sqlite", "postgresql", "mysql", "mssql")


def _carried(spans: list[Any]) -> frozenset[str]:
    """What of "usage" and "cost" ``spans`` carry."""
    key = compat.SpanAttributeKey
    usage = any(span.get_attribute(key.CHAT_USAGE) for span in spans)
    cost = any(span.get_attribute(key.LLM_COST) for span in spans)
    return frozenset(name for name, has in (("usage", usage), ("cost", cost)) if has)


def _release(trace_id: str, trace: _Trace, spans: list[Any]) -> None:
    sizes = {span.span_id: compat.span_json_size(span) for span in spans}
    with _lock:  # every stored span's, released or not (the trace's size stats)
        trace.sizes.extend(sizes.values())

    def take(released: list[Any]) -> bool:
        # Under MLflow's trace manager lock: counted here, or by MLflow at the root's end.
        with _lock:
            if trace.closed:
                return False
            _count(trace, released, sizes)
            return True

    compat.release_ended_spans(trace_id, sizes, take)


def _count(trace: _Trace, released: list[Any], sizes: Mapping[str, int]) -> None:
    key = compat.SpanAttributeKey
    for span in released:
        _add(trace.usage, span.get_attribute(key.CHAT_USAGE))
        _add(trace.cost, span.get_attribute(key.LLM_COST))
        trace.released_bytes += sizes[span.span_id]
    trace.released += len(released)


def _add(sums: dict[str, Any], more: Mapping[str, Any] | None) -> None:
    # As MLflow sums a trace's usage (aggregate_usage_from_spans): key by key, over the
    # spans that carry it. Usage sits on the LLM spans, whose ancestors carry none.
    for name, value in (more or {}).items():
        if isinstance(value, int | float):
            sums[name] = sums.get(name, 0) + value


def _write_info_early(client: Any, trace_id: str, trace: _Trace, carried: frozenset[str]) -> None:
    """Write the trace's info now, with the usage and cost released so far, if it was not
    written with all of ``carried`` yet: the store takes later batches without re-reading
    the trace (its stored totals are authoritative once ``start_trace`` set them). The
    root span's end writes the info again, whole (``complete``, which waits for this
    write). Also after the run ended: the store may take its spans after that. Other
    writers of the trace wait."""
    import copy

    from mlflow.entities import TraceState

    with trace.writing:
        with _lock:
            if trace.completed or carried <= trace.written:
                return
            # Marked written only once the store has it (below): until then a batch of
            # another export thread sees it unwritten and waits here, rather than reaching
            # the store first and making it read the trace back.
            written, usage, cost = trace.written | carried, dict(trace.usage), dict(trace.cost)
            info = copy.deepcopy(trace.info_at_close)
        if info is None and (info := compat.trace_info_now(trace_id)) is None:
            return
        info.state = TraceState.IN_PROGRESS
        info.execution_duration = None
        key = compat.TraceMetadataKey
        if "usage" in written:
            info.trace_metadata[key.TOKEN_USAGE] = json.dumps(_with_totals(usage, _TOKEN_KEYS, 0))
        if "cost" in written:
            info.trace_metadata[key.COST] = json.dumps(_with_totals(cost, _COST_KEYS, 0.0))
        try:
            client.start_trace(info)
        except Exception as exc:  # the store recomputes per batch instead: slower, still whole
            logger.debug("early trace info for %s not written: %s", trace_id, exc)
        with _lock:
            trace.written = written


_BOTH = frozenset({"usage", "cost"})
_TOKEN_KEYS = ("input_tokens", "output_tokens", "total_tokens")
_COST_KEYS = ("input_cost", "output_cost", "total_cost")


def _with_totals(sums: dict[str, Any], keys: tuple[str, ...], zero: Any) -> dict[str, Any]:
    return {**dict.fromkeys(keys, zero), **sums}


def complete(trace_info: Any) -> None:
    """Add to ``trace_info`` (what MLflow writes when the root span ends, summed over the
    spans its trace manager still held) what was released of its trace: token usage,
    cost unless the run set it, and size stats."""
    with _lock:
        trace = _traces.pop(trace_info.trace_id, None)
    if trace is None:
        return
    with trace.writing:  # an early write in flight goes first; none after this
        trace.completed = True
    if not trace.released:
        return
    key = compat.TraceMetadataKey
    metadata = trace_info.trace_metadata
    usage = dict(trace.usage)
    _add(usage, json.loads(metadata.get(key.TOKEN_USAGE) or "{}"))
    if usage:
        metadata[key.TOKEN_USAGE] = json.dumps(_with_totals(dict(usage), _TOKEN_KEYS, 0))
    if key.COST not in metadata and trace.cost:  # the run sets it from its ledger (session.py)
        metadata[key.COST] = json.dumps(_with_totals(dict(trace.cost), _COST_KEYS, 0.0))
    if stats := metadata.get(key.SIZE_STATS):
        stats_and_total = _size_stats(json.loads(stats), trace)
        metadata[key.SIZE_STATS] = json.dumps(stats_and_total)
        metadata[key.SIZE_BYTES] = str(stats_and_total["total_size_bytes"])


def _size_stats(held: dict[str, int], trace: _Trace) -> dict[str, int]:
    """MLflow's size stats of the whole trace, from those of the spans it still held
    (``add_size_stats_to_trace_metadata``) and the sizes stored here."""
    spans = held["num_spans"] + trace.released
    sizes = sorted(trace.sizes)
    if len(sizes) != spans:  # a batch not stored yet (a store written by many threads)
        sizes = sorted([*sizes, *[held["p50"]] * max(spans - len(sizes), 0)])[:spans]
    return {
        # MLflow's total: the spans' JSON, the info's, and ", " between two spans
        "total_size_bytes": held["total_size_bytes"] + trace.released_bytes + 2 * trace.released,
        "num_spans": spans,
        "max": max(held["max"], sizes[-1] if sizes else 0),
        "p25": int(_percentile(sizes, 0.25)),
        "p50": int(_percentile(sizes, 0.50)),
        "p75": int(_percentile(sizes, 0.75)),
    }


def _percentile(ordered: list[int], fraction: float) -> float:
    """MLflow's percentile (linear between the two nearest values)."""
    if not ordered:
        return 0.0
    index = fraction * (len(ordered) - 1)
    lower = int(index)
    if lower + 1 >= len(ordered):
        return ordered[-1]
    weight = index - lower
    return ordered[lower] * (1 - weight) + ordered[lower + 1] * weight
