"""What a worker process runs (see core.Worker). Heavy imports stay inside the functions.

Each ``setup_*`` takes the scenario's params and returns the function timed on every "run".
The timed region is exactly the call a user makes: ``graph.invoke``, ``dg.materialize`` or
``run_workflow``; setup (loading the file, building the asset) happens once, untimed.
"""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations.

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Run = Callable[[], dict[str, Any]]


def _graph(params: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    from agents_pipelines.graph import build_graph, initial_state
    from agents_pipelines.llm import Backend, chat_model_factory
    from agents_pipelines.spec import load_workflow

    workflow = load_workflow(params["path"])
    factory = chat_model_factory(Backend.SIMULATED, float(params["latency"]))
    graph = build_graph(workflow.spec, factory)
    return workflow, graph, initial_state(workflow.spec, {})


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def setup_bare(params: Mapping[str, Any]) -> Run:
    """The graph alone: ``compiled_graph.invoke`` with the simulated model, no MLflow."""
    _, graph, state = _graph(params)

    def run() -> dict[str, Any]:
        elapsed, _ = _timed(lambda: graph.invoke(state))
        return {"elapsed_s": elapsed}

    return run


def setup_dagster_plain(params: Mapping[str, Any]) -> Run:
    """A hand-written Dagster asset that invokes the same graph: Dagster's own floor."""
    import dagster as dg

    workflow, graph, state = _graph(params)

    @dg.asset(name=workflow.name)
    def plain() -> dg.Output[dict[str, Any]]:
        return dg.Output(dict(graph.invoke(state)))

    return _materialize(dg, [plain], {}, workflow.name)


def setup_peer(params: Mapping[str, Any]) -> Run:
    """The hand-written peer: autolog, ``graph.invoke`` inside ``start_run``, then flush the
    trace and read usage and cost back from it (MLflow's default experiment: no lookup)."""
    import dagster as dg
    import mlflow

    workflow, graph, state = _graph(params)

    @dg.asset(name=workflow.name)
    def peer() -> dg.Output[dict[str, Any]]:
        mlflow.langchain.autolog()
        with mlflow.start_run():
            final = dict(graph.invoke(state))
        mlflow.flush_trace_async_logging()
        trace_id = mlflow.get_last_active_trace_id()
        trace = mlflow.get_trace(trace_id) if trace_id else None
        if trace is None:
            raise RuntimeError("the peer found no trace")
        usage = trace.info.token_usage or {}
        cost = trace.info.trace_metadata.get("mlflow.trace.cost", "")
        return dg.Output(
            final,
            metadata={
                "total_tokens": int(usage.get("total_tokens", 0)),
                "total_cost": dg.MetadataValue.text(str(cost)),
                "mlflow_trace_id": dg.MetadataValue.text(trace_id or ""),
            },
        )

    return _materialize(dg, [peer], {}, workflow.name)


def setup_ours(params: Mapping[str, Any]) -> Run:
    """agents_pipelines: the workflow's own asset and the WorkflowRunner resource."""
    import dagster as dg

    from agents_pipelines.orchestration import WorkflowRunner, build_workflow_asset
    from agents_pipelines.spec import load_workflow

    workflow = load_workflow(params["path"])
    runner = WorkflowRunner(llm_backend="simulated", simulated_latency_s=float(params["latency"]))
    asset = build_workflow_asset(workflow)
    return _materialize(dg, [asset], {"workflow_runner": runner}, workflow.name)


def _materialize(dg: Any, assets: list[Any], resources: dict[str, Any], name: str) -> Run:
    # One ephemeral instance per process, as a deployment has one instance per process:
    # a new one per call would add Dagster's in-memory storage set-up (~110 ms of alembic
    # stamping) to every variant alike.
    instance = dg.DagsterInstance.ephemeral()

    def run() -> dict[str, Any]:
        elapsed, result = _timed(
            lambda: dg.materialize(assets, resources=resources, instance=instance)
        )
        if not result.success:
            raise RuntimeError("materialization failed")
        (event,) = result.asset_materializations_for_node(name)
        meta = {k: v.value for k, v in event.metadata.items()}
        reply: dict[str, Any] = {"elapsed_s": elapsed}
        if "duration_s" in meta:
            reply["runner_duration_s"] = meta["duration_s"]
        return reply

    return run


def setup_runner(params: Mapping[str, Any]) -> Run:
    """``run_workflow`` directly (no Dagster)."""
    from agents_pipelines.runner import run_workflow
    from agents_pipelines.spec import load_workflow

    workflow = load_workflow(params["path"])
    latency = float(params["latency"])

    def run() -> dict[str, Any]:
        elapsed, result = _timed(
            lambda: run_workflow(workflow, backend="simulated", simulated_latency_s=latency)
        )
        return {
            "elapsed_s": elapsed,
            "runner_duration_s": result.duration_s,
            "llm_calls": result.usage.llm_calls,
        }

    return run


def _partitioned_asset(params: Mapping[str, Any]) -> tuple[Any, Any, dict[str, Any], list[str]]:
    """The workflow, its asset, the code location's resources and the partition keys."""
    from agents_pipelines.orchestration import (
        WorkflowIOManager,
        WorkflowRunner,
        build_workflow_asset,
    )
    from agents_pipelines.spec import load_workflow

    workflow = load_workflow(params["path"])
    runner = WorkflowRunner(llm_backend="simulated", simulated_latency_s=float(params["latency"]))
    asset = build_workflow_asset(workflow)
    # The code location's IO manager (Dagster's filesystem one refuses a range's output).
    resources = {"workflow_runner": runner, "io_manager": WorkflowIOManager()}
    keys = asset.partitions_def.get_partition_keys() if asset.partitions_def else []
    return workflow, asset, resources, keys


def setup_batch(params: Mapping[str, Any]) -> Run:
    """A backfill of every partition of the workflow's asset: one ``dg.materialize`` per
    partition, ``threads`` at a time, on one Dagster instance in this process."""
    import dagster as dg

    workflow, asset, resources, keys = _partitioned_asset(params)
    threads = int(params["threads"])
    # One in-memory instance per thread, as each run worker has its own: Dagster's
    # in-memory storage is not shared between threads ("database table is locked").
    local = threading.local()

    def one(key: str) -> int:
        if not hasattr(local, "instance"):
            local.instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [asset],
            resources=resources,
            instance=local.instance,
            partition_key=key,
        )
        (event,) = result.asset_materializations_for_node(workflow.name)
        return int(event.metadata["llm_calls"].value)  # type: ignore[arg-type]

    first = [True]

    def run() -> dict[str, Any]:
        # With "short_warmup", the first call (the warm-up) runs one wave only.
        chosen = keys[:threads] if first[0] and params.get("short_warmup") else keys
        first[0] = False
        with ThreadPoolExecutor(max_workers=threads) as pool:
            elapsed, calls = _timed(lambda: list(pool.map(one, chosen)))
        return {"elapsed_s": elapsed, "llm_calls": sum(calls), "runs": len(calls)}

    return run


def setup_batch_ranges(params: Mapping[str, Any]) -> Run:
    """The same backfill as one range run: one ``dg.materialize`` over every partition (the
    range tags the backfill daemon sets), the workflow's ``orchestration.backfill`` running
    ``max_concurrency`` partitions at once, each its own workflow run and MLflow run."""
    import dagster as dg

    workflow, asset, resources, keys = _partitioned_asset(params)
    instance = dg.DagsterInstance.ephemeral()
    threads = int(params["threads"])
    first = [True]

    def run() -> dict[str, Any]:
        chosen = keys[:threads] if first[0] and params.get("short_warmup") else keys
        first[0] = False
        tags = {
            "dagster/asset_partition_range_start": chosen[0],
            "dagster/asset_partition_range_end": chosen[-1],
        }
        elapsed, result = _timed(
            lambda: dg.materialize([asset], resources=resources, instance=instance, tags=tags)
        )
        events = result.asset_materializations_for_node(workflow.name)
        calls = sum(int(e.metadata["llm_calls"].value) for e in events)  # type: ignore[arg-type]
        return {"elapsed_s": elapsed, "llm_calls": calls, "runs": len(events)}

    return run


def setup_map_throughput(params: Mapping[str, Any]) -> Run:
    """``run_workflow`` of a workflow of map nodes, with the backend of the environment (the
    simulated one, or Gemini's client against a loopback server). Reports the run's wall
    time, the time from the graph's end to the run's end (the MLflow run closed, the trace
    handed to the export), the export's drain after it, this process's CPU time, and the
    calls found in cost_summary.json and in the stored trace. With ``freeze_heap: false``
    the process never freezes its set-up's objects (agents_pipelines.process_heap): the
    old behaviour, for an A/B in the same run; with ``langchain_autolog: true`` MLflow's
    LangChain autolog is switched on as well (the old path of the run's LangChain spans)."""
    import gc
    import json
    import resource
    from pathlib import Path

    import mlflow
    import mlflow.langchain
    from mlflow import MlflowClient

    from agents_pipelines.graph import event_loop
    from agents_pipelines.runner import run_workflow
    from agents_pipelines.spec import load_workflow
    from agents_pipelines.tracking import drain_trace_export

    item_index = "agents_pipelines.item_index"
    graph_ended: list[float] = []
    run_graph = event_loop.run

    def timed_graph(*args: Any, **kwargs: Any) -> Any:
        try:
            return run_graph(*args, **kwargs)
        finally:
            graph_ended.append(time.perf_counter())

    event_loop.run = timed_graph  # type: ignore[assignment]  # the runner looks it up per run
    if not params.get("freeze_heap", True):
        gc.freeze = lambda: None  # the one call is process_heap's, at the first run's start
    if params.get("langchain_autolog", False):
        # The old path's cost: autolog's patch of every LangChain callback manager. It finds
        # the run's own tracer among the inherited handlers and adds none, so the spans are
        # the same; each callback manager pays the patch, as before tracking/client.py
        # passed the tracer itself.
        mlflow.langchain.autolog(log_traces=True, silent=True, run_tracer_inline=True)
    run_workflow(load_workflow(params["warm_path"]))  # imports, clients, connections
    drain_trace_export()
    workflow = load_workflow(params["path"])

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    collecting = [0.0, 0.0]  # CPU time in the collector, the current collection's start

    def timed_collection(phase: str, _info: Mapping[str, Any]) -> None:
        if phase == "start":
            collecting[1] = time.process_time()
        else:
            collecting[0] += time.process_time() - collecting[1]

    gc.callbacks.append(timed_collection)

    def run() -> dict[str, Any]:
        cpu, collecting[0] = cpu_s(), 0.0
        elapsed, result = _timed(lambda: run_workflow(workflow))
        ended = time.perf_counter()
        tail = ended - graph_ended[-1]
        cpu = cpu_s() - cpu
        drain, _ = _timed(drain_trace_export)
        info = result.tracking
        assert info is not None and info.trace_id is not None
        client = MlflowClient()
        summary = json.loads(
            Path(client.download_artifacts(info.run_id, "cost_summary.json")).read_text()
        )
        spans = mlflow.get_trace(info.trace_id).data.spans
        traced = {
            (s.attributes.get("agents_pipelines.node"), s.attributes.get(item_index))
            for s in spans
            if s.span_type == "CHAT_MODEL"
        }
        return {
            "elapsed_s": elapsed,
            "tail_s": tail,
            "drain_s": drain,
            "cpu_s": cpu,
            "gc_s": collecting[0],
            "llm_calls": result.usage.llm_calls,
            "cost_usd": result.usage.total_cost_usd,
            "summary_calls": len({(c["node"], c["item"]) for c in summary["calls"]}),
            "traced_calls": len(traced),
        }

    return run


SCENARIOS: dict[str, Callable[[Mapping[str, Any]], Run]] = {
    "bare": setup_bare,
    "dagster_plain": setup_dagster_plain,
    "peer": setup_peer,
    "ours": setup_ours,
    "runner": setup_runner,
    "batch": setup_batch,
    "batch_ranges": setup_batch_ranges,
    "map_throughput": setup_map_throughput,
}
