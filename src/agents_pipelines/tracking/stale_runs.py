"""Close the MLflow runs of processes that died mid-run as KILLED, with the spend their
trace shows.

A process that dies without running its ``finally`` (``kill -9``, the OOM killer, a lost
machine) leaves its MLflow run RUNNING for ever, with no metrics. So each run is tagged
with the process that owns it, and later with its trace; when a run of a workflow starts,
the RUNNING runs of that workflow in its experiment are looked up and a run is closed when

- its owner ran on this host (same host name and pid namespace) and is gone: no such
  pid, a zombie, or a pid reused by a process that started at another time; or
- it started more than ``MAX_RUN_AGE_S`` ago: the owner of a run from another host (or
  from before owners were tagged) cannot be checked from here.

A live process's run, on this host or another, is never closed within that age. The look
up is one ``search_runs`` per process and workflow (see ``close_dead_runs``), so a ghost
is closed by the first run of its workflow in a new process: in Dagster, every run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agents_pipelines.registry import process_registry

logger = logging.getLogger(__name__)

WORKFLOW_TAG = "agents_pipelines.workflow"
HOST_TAG = "agents_pipelines.host"
PID_NAMESPACE_TAG = "agents_pipelines.pid_namespace"
PID_TAG = "agents_pipelines.pid"
PID_STARTED_TAG = "agents_pipelines.pid_started"
TRACE_TAG = "agents_pipelines.trace_id"
CLOSED_TAG = "agents_pipelines.closed_as_killed"
# No workflow run is expected to last a day: a run this old whose owner cannot be checked
# (another host) is taken for dead. Dagster's run monitoring uses the same bound.
MAX_RUN_AGE_S = 24 * 3600
# A pid's start time is read to 1/100 s (clock ticks) and rounded to 2 decimals.
_START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class ProcessOwner:
    """The process that owns a run: where it runs, its pid, and when it started."""

    host: str
    pid_namespace: str
    pid: int
    started: float | None

    @classmethod
    def current(cls) -> ProcessOwner:
        pid = os.getpid()
        return cls(socket.gethostname(), _pid_namespace(), pid, _process_start(pid))

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ProcessOwner | None:
        try:
            pid = int(tags[PID_TAG])
            started = float(tags[PID_STARTED_TAG]) if tags.get(PID_STARTED_TAG) else None
            return cls(tags[HOST_TAG], tags.get(PID_NAMESPACE_TAG, ""), pid, started)
        except (KeyError, ValueError):
            return None

    def tags(self) -> dict[str, str]:
        started = "" if self.started is None else f"{self.started:.2f}"
        return {
            HOST_TAG: self.host,
            PID_NAMESPACE_TAG: self.pid_namespace,
            PID_TAG: str(self.pid),
            PID_STARTED_TAG: started,
        }

    def is_local(self) -> bool:
        here = ProcessOwner.current()
        return (self.host, self.pid_namespace) == (here.host, here.pid_namespace)

    def is_alive(self) -> bool:
        """Whether this process still runs; only meaningful when ``is_local()``."""
        if self.pid == os.getpid():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        if _is_zombie(self.pid):
            return False
        started = _process_start(self.pid)
        if self.started is None or started is None:
            return True  # no start times to compare (not Linux): the pid exists
        return abs(started - self.started) < _START_TIME_TOLERANCE_S


def owner_tags() -> dict[str, str]:
    """Tags naming this process as a run's owner; added when the run is created."""
    return ProcessOwner.current().tags()


def link_trace(client: Any, run_id: str, trace_id: str) -> None:
    """Tag the run with its trace: a trace is linked to its run only once it ends, and
    the trace of a process that died must still be found. One more write per run
    (31 ms against 69 ms for a ``get_run``, on SQLite on a loaded machine). Never raises."""
    try:
        client.set_tag(run_id, TRACE_TAG, trace_id)
    except Exception as exc:
        logger.warning("Could not tag MLflow run %s with its trace %s: %s", run_id, trace_id, exc)


def close_dead_runs(client: Any, tracking_uri: str, experiment_id: str, workflow: str) -> None:
    """Close the RUNNING runs of ``workflow`` whose process is gone, once per process.

    Once per process: a ghost is left by another process, and one that dies after this
    look is closed by the next run of the workflow in a new process (in Dagster, every
    run is one). The search
    costs about one ``get_run`` on SQLite, measured on a loaded machine: 91 ms against
    69 ms for ``get_run``, 76 ms in an empty experiment, 1,000 finished runs in it. Never
    raises: a run must not fail for want of closing another's.
    """
    key = (tracking_uri, experiment_id, workflow)
    registry = process_registry()  # MLflow's client is the process's: so is this check
    with registry.stale_runs_lock:
        if key in registry.stale_runs_checked:
            return
        registry.stale_runs_checked.add(key)
    try:
        for run in _running_runs(client, experiment_id, workflow):
            if is_dead(run.data.tags, run.info.start_time):
                close_as_killed(client, run.info.run_id, run.data.tags.get(TRACE_TAG))
    except Exception as exc:
        logger.warning("Could not close the dead runs of workflow %s: %s", workflow, exc)


def is_dead(tags: Mapping[str, str], start_time_ms: int, now: float | None = None) -> bool:
    owner = ProcessOwner.from_tags(tags)
    if owner is not None and owner.is_local():
        return not owner.is_alive()
    age_s = (now if now is not None else time.time()) - start_time_ms / 1000
    return age_s > MAX_RUN_AGE_S


def close_as_killed(client: Any, run_id: str, trace_id: str | None) -> None:
    """End ``run_id`` as KILLED, with the tokens and cost of the spans its trace stored."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    metrics = spend_in_trace(client, trace_id) if trace_id else {}
    note = "its process died mid-run; metrics are the spend its trace recorded"
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
        tags=[RunTag(CLOSED_TAG, note)],
    )
    client.set_terminated(run_id, "KILLED")
    logger.warning("Closed MLflow run %s as KILLED: %s (%s)", run_id, note, metrics)


def spend_in_trace(client: Any, trace_id: str) -> dict[str, float]:
    """Tokens and cost summed over the LLM spans of ``trace_id`` that reached the store.

    Spans are stored in batches every 0.5 s as they end (see session.py), so the last
    call of a process killed right after it may be missing: the figures are a floor.
    """
    from mlflow.exceptions import MlflowException

    from agents_pipelines._compat.mlflow import SpanAttributeKey, span_totals

    try:
        spans = list(client.get_trace(trace_id).data.spans)
    except MlflowException:
        return {}  # no span of it was stored
    usage, cost = span_totals(spans)
    calls = [s for s in spans if s.get_attribute(SpanAttributeKey.CHAT_USAGE)]
    metrics = {
        "llm_calls": float(len(calls)),
        "prompt_tokens": float(usage.get("input_tokens", 0)),
        "completion_tokens": float(usage.get("output_tokens", 0)),
        "total_tokens": float(usage.get("total_tokens", 0)),
        "cached_tokens": float(usage.get("cache_read_input_tokens", 0)),
    }
    if cost:
        metrics["total_cost_usd"] = float(cost.get("total_cost", 0.0))
    return metrics


def _running_runs(client: Any, experiment_id: str, workflow: str) -> Iterable[Any]:
    quoted = workflow.replace("'", "\\'")
    return client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{WORKFLOW_TAG}` = '{quoted}'",
        max_results=1000,
    )


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _is_zombie(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is not None and fields[0] in ("Z", "X")


def _process_start(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch (Linux), to 1/100 s."""
    fields = _proc_stat(pid)
    boot = _boot_time()
    if fields is None or boot is None:
        return None
    ticks = int(fields[19])  # field 22 of stat(5), starttime, in clock ticks since boot
    return round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)


# Module-level, not in the registry: the machine's boot time, fixed for the process.
@cache
def _boot_time() -> float | None:
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    return next((float(line.split()[1]) for line in lines if line.startswith("btime ")), None)


# Module-level, not in the registry: fixed for the process.
@cache
def _pid_namespace() -> str:
    """This process's pid namespace: containers sharing a host name do not share pids."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
