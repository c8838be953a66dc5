"""Run one workflow N times at once, each run in its own process, against one Dagster
instance (DAGSTER_HOME) and one MLflow tracking URI (MLFLOW_TRACKING_URI).

The parent imports everything once and forks the workers, so N processes start in well
under a second instead of N interpreter starts. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from typing import Any

import dagster as dg

import agents_pipelines.runner  # noqa: F401  (heavy imports before forking)
from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
from agents_pipelines.spec import load_workflow
from agents_pipelines.tracking import drain_trace_export

_ASSET: dg.AssetsDefinition | None = None


def _materialize(index: int) -> dict[str, Any]:
    assert _ASSET is not None
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        result = dg.materialize(
            [_ASSET],
            instance=instance,
            resources={"workflow_runner": WorkflowRunner()},
            raise_on_error=False,
            tags={"load/index": str(index)},
        )
    # A forked worker ends with os._exit, which skips MLflow's atexit flush.
    drain_trace_export()
    errors = [
        f"{event.event_type_value}: {event.message}"
        for event in result.all_events
        if not result.success
        and (
            event.is_failure
            or "error" in (event.message or "").lower()
            or event.event_type_value in ("RUN_FAILURE", "ENGINE_EVENT")
        )
    ]
    return {
        "run_id": result.run_id,
        "success": result.success,
        "pid": os.getpid(),
        "errors": errors,
    }


def main() -> None:
    global _ASSET
    parser = argparse.ArgumentParser()
    parser.add_argument("workflow")
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    _ASSET = build_workflow_asset(load_workflow(args.workflow))
    context = multiprocessing.get_context("fork")
    with context.Pool(args.processes, maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(_materialize, range(args.processes)):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
