"""The collector's work in a run process: the objects that exist once a run is set up are
frozen, so that collections stop walking them.

A run process imports dagster, MLflow, LangGraph and google-genai before its first call:
about 520,000 objects (modules, classes, functions, their dicts) that live as long as the
process. Python's collector walks them again at every full collection, and a map's calls
make enough short-lived objects (spans, requests, callback managers) to trigger one every
few hundred calls: in a profile of a 480-item map (the real client against the loopback
server, tracking on) collections took 1.5 s of the run's 4.9 s of CPU. Freezing halves
the collector's CPU per item call (1.27 to 0.65 ms, a 160-item map, old and new
interleaved on a shared machine; docs/performance.md, row 8).

``gc.freeze()`` moves every object tracked at that moment to a permanent generation that
collections skip. Freezing is fine for these objects because they are import-time state
(and the graph, models and clients the process keeps for its later runs), which nothing
would ever collect anyway. It is done once per process, at the first run's start, after a
full collection so that no garbage of the set-up is frozen with them; objects made later
(each run's items, spans, replies) are collected as before, and a frozen object whose
count of references drops to zero is still freed at once.
"""

from __future__ import annotations

import gc
import os
import threading

_lock = threading.Lock()
_frozen_in: int | None = None  # the pid that froze its heap (a forked child freezes again)


def freeze_set_up_objects() -> bool:
    """Freeze the objects alive now, once per process; whether this call froze them."""
    global _frozen_in
    with _lock:
        if _frozen_in == os.getpid():
            return False
        gc.collect()
        gc.freeze()
        _frozen_in = os.getpid()
        return True
