"""A run process freezes the objects of its set-up once (agents_pipelines.process_heap),
so that the collector stops walking its imports during a map's calls; the runs' results
are those of a process that never froze."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO, write

DRIVER = REPO / "tests" / "support" / "heap_driver.py"
ITEMS = 40

MAP_WORKFLOW = f"""\
schema_version: "1"
flow: {{name: heap}}
state:
  fields:
    docs:   {{type: "list[str]", required: true}}
    labels: {{type: "list[str]", default: []}}
nodes:
  - id: label
    map: {{over: docs, as: doc, max_concurrency: 4}}
    prompt: "Give a one-word label for: {{doc}}"
    outputs: [labels]
edges:
  - {{from: START, to: label}}
  - {{from: label, to: END}}
config:
  observability: {{mlflow: {{enabled: false}}}}
orchestration:
  inputs: {{docs: {json.dumps([f"document {i}" for i in range(ITEMS)])}}}
"""


def two_runs(path: Path, mode: str) -> dict[str, Any]:
    env = {**os.environ, "AGENTS_PIPELINES_LLM_BACKEND": "simulated"}
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(path), mode],
        capture_output=True, text=True, env=env, cwd=path.parent, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reply: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reply


def test_a_process_freezes_its_set_up_once_and_a_maps_results_are_unchanged(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, MAP_WORKFLOW)
    frozen = two_runs(path, "frozen")
    unfrozen = two_runs(path, "unfrozen")
    # Once per process, at the first run's start; the second run freezes nothing more.
    assert frozen["freezes"] == 1
    assert frozen["frozen"] > 100_000  # the imports: hundreds of thousands of objects
    assert unfrozen["frozen"] == 0
    labels = [state["labels"] for state in frozen["states"]]
    assert [len(found) for found in labels] == [ITEMS, ITEMS]
    assert labels[0] == labels[1]
    assert frozen["states"] == unfrozen["states"]
