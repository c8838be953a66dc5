"""A Python step for map nodes that takes a census of live objects as the items run.

Every ``EVERY``-th item counts, after a full collection, the objects of the kinds that grow with a
map's list when a run holds them for all its items at once: LangGraph's tasks and their
``Send`` payloads, and the span objects MLflow's trace manager holds
(tests/test_map_memory.py). A census walks the whole heap, so it is taken for some items
only."""

from __future__ import annotations

import gc
from collections import Counter

# MLflow's spans of a trace, whole (LiveSpan), compact (CompactSpan: how ended spans were
# kept before they were released) or released to a stub of ids (ReleasedSpan).
SPAN_KINDS = ("LiveSpan", "CompactSpan", "ReleasedSpan")
KINDS = ("PregelExecutableTask", "Send", *SPAN_KINDS)
PEAKS: Counter[str] = Counter()  # the most objects of each kind seen alive at once
EVERY = 25  # items between two censuses


def census(review: str) -> dict[str, str]:
    """The item as its own label; ``review N`` takes a census when N is a multiple of
    ``EVERY``."""
    if int(review.rsplit(" ", 1)[-1]) % EVERY == 0:
        alive = alive_now()
        for kind in KINDS:
            PEAKS[kind] = max(PEAKS[kind], alive[kind])
    return {"labels": review}


def alive_now() -> Counter[str]:
    """The objects of each of ``KINDS`` alive now, after a full collection."""
    gc.collect()
    alive = Counter(type(o).__name__ for o in gc.get_objects())
    return Counter({kind: alive[kind] for kind in KINDS})


def reset() -> None:
    PEAKS.clear()


def export_backlog(review: str) -> dict[str, str]:
    """The item as its own label; records the most ended spans of the run's trace seen
    waiting for the store (tracking/span_release.py) as ``PEAKS["backlog"]``."""
    from agents_pipelines.tracking import span_release

    with span_release._lock:
        waiting = [t.ended - t.settled for t in span_release._traces.values()]
    PEAKS["backlog"] = max(PEAKS["backlog"], *waiting, 0)
    return {"labels": review}
