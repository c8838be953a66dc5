"""Runs a workflow twice in a fresh process and prints, as JSON, each run's final state
and how often ``gc.freeze`` was called (tests/test_process_heap.py).

``python heap_driver.py WORKFLOW_YAML frozen|unfrozen``: with ``unfrozen``, ``gc.freeze``
is a no-op here, so the two processes differ only in the frozen heap."""

from __future__ import annotations

import gc
import json
import sys

from agents_pipelines.runner import run_workflow
from agents_pipelines.spec import load_workflow

calls: list[int] = []
freeze = gc.freeze


def counted_freeze() -> None:
    calls.append(gc.get_count()[0])
    if sys.argv[2] == "frozen":
        freeze()


gc.freeze = counted_freeze
workflow = load_workflow(sys.argv[1])
states = [run_workflow(workflow).state for _ in range(2)]
print(json.dumps({"states": states, "freezes": len(calls), "frozen": gc.get_freeze_count()}))
