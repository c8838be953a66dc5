"""Run one workflow N times at once, each run in its own process, against one Dagster
instance (DAGSTER_HOME) and one MLflow tracking URI (MLFLOW_TRACKING_URI).

The parent imports everything once and forks the workers, so N processes start in well
under a second instead of N interpreter starts. Prints one JSON line per run.

Before forking, the parent creates the asset's pools at the instance's default limit, once,
as Dagster's run queue daemon does before it launches the first run of a pool. Runs that
start together must not each create the pool on their first slot claim: on PostgreSQL the
losers of that race fail before their step starts (dagster-io/dagster#33552).
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
        f"{event.event_type_value}: {event.message} {_error_text(event)}".rstrip()
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


def _error_text(event: dg.DagsterEvent) -> str:
    """The error a failure event carries, whose cause the event's message leaves out."""
    error = getattr(event.event_specific_data, "error", None)
    return error.to_string()[-2000:] if error is not None else ""


def initialize_pools(instance: dg.DagsterInstance, asset: dg.AssetsDefinition) -> None:
    """What GlobalOpConcurrencyLimitsCounter._initialize_pool_limits does in the run queue
    daemon: give each pool without a limit row the default limit, from one process."""
    default_limit = instance.global_op_concurrency_default_limit
    if default_limit is None:
        return
    limits = {pool.name: pool for pool in instance.event_log_storage.get_pool_limits()}
    for pool in sorted({op.pool for op in asset.node_def.iterate_op_defs() if op.pool}):
        known = limits.get(pool)
        if known is None or (known.from_default and known.limit != default_limit):
            instance.event_log_storage.initialize_concurrency_limit_to_default(pool)


def main() -> None:
    global _ASSET
    parser = argparse.ArgumentParser()
    parser.add_argument("workflow")
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    _ASSET = build_workflow_asset(load_workflow(args.workflow))
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        initialize_pools(instance, _ASSET)
    context = multiprocessing.get_context("fork")
    with context.Pool(args.processes, maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(_materialize, range(args.processes)):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
