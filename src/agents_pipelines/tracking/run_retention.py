"""Retention in MLflow: a workflow's runs older than its ``retention_days``, with their
artifacts, and their traces, deleted for good.

- Runs: those tagged ``agents_pipelines.workflow`` with the workflow's name in its
  experiment, started before the cutoff, in any lifecycle stage (a run deleted in the UI is
  only hidden). Each is soft-deleted, then its artifacts and its row are deleted, as
  ``mlflow gc --run-ids`` does (_compat.mlflow.hard_delete_run). A tracking server cannot be
  asked to hard-delete: there the runs are soft-deleted, and ``mlflow gc`` on the server
  finishes the job.
- Traces: the traces of those runs (the run's tag names it, and a trace starts a moment
  after its run), and the traces stamped before the cutoff that one of those runs made, or
  that no run made when no other workflow (of those pruned) logs to the experiment: another
  workflow's retention is never imposed on its traces. Deleted by id
  (``MlflowClient.delete_traces``), so a dry run lists exactly what a real one deletes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agents_pipelines._compat.mlflow import TraceMetadataKey, hard_delete_run
from agents_pipelines.tracking.client import configured_client
from agents_pipelines.tracking.stale_runs import TRACE_TAG
from agents_pipelines.tracking.tracking_settings import TrackingSettings

WORKFLOW_TAG = "agents_pipelines.workflow"  # set on every run (recorder.RunRecorder.start)
_PAGE = 500
_TRACE_IDS_PER_CALL = 100  # MLflow's limit of trace ids per delete_traces call


@dataclass(frozen=True)
class ExpiredRecords:
    """What one workflow has in MLflow past its retention."""

    settings: TrackingSettings
    experiment_id: str | None
    runs: tuple[Any, ...]  # mlflow.entities.Run
    trace_ids: tuple[str, ...]
    shared_experiment: bool
    cutoff_ms: int

    @property
    def run_ids(self) -> list[str]:
        return [run.info.run_id for run in self.runs]


def find_expired(
    settings: TrackingSettings, workflow: str, cutoff_ms: int, shared_experiment: bool
) -> ExpiredRecords:
    """The runs of ``workflow`` started before ``cutoff_ms`` and the traces stamped before
    it (only those of these runs when ``shared_experiment``)."""
    client = configured_client(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return ExpiredRecords(settings, None, (), (), shared_experiment, cutoff_ms)
    experiment_id = str(experiment.experiment_id)
    runs = tuple(_old_runs(client, experiment_id, workflow, cutoff_ms))
    run_ids = {run.info.run_id for run in runs}
    linked = [tag for run in runs if (tag := run.data.tags.get(TRACE_TAG))]
    old = [
        trace.trace_id
        for trace in _old_traces(client, experiment_id, cutoff_ms)
        if _ours(trace.trace_metadata.get(TraceMetadataKey.SOURCE_RUN), run_ids, shared_experiment)
    ]
    traces = sorted({*linked, *old})
    return ExpiredRecords(
        settings, experiment_id, runs, tuple(traces), shared_experiment, cutoff_ms
    )


def _ours(source_run: str | None, run_ids: set[str], shared_experiment: bool) -> bool:
    """Whether an old trace is the workflow's: one of its runs made it, or no run did and
    the experiment is the workflow's alone."""
    return source_run in run_ids if source_run else not shared_experiment


def delete_expired(expired: ExpiredRecords) -> tuple[int, int, bool]:
    """Delete what ``find_expired`` found: traces first (their runs still name them), then
    the runs. Returns (traces deleted, runs deleted, whether the runs are gone for good
    rather than soft-deleted)."""
    if expired.experiment_id is None:
        return 0, 0, True
    client = configured_client(expired.settings.tracking_uri)
    traces = _delete_traces(client, expired)
    for_good = True
    for run in expired.runs:
        if run.info.lifecycle_stage != "deleted":
            client.delete_run(run.info.run_id)
        uri = expired.settings.tracking_uri
        for_good = hard_delete_run(uri, run.info.run_id, run.info.artifact_uri) and for_good
    return traces, len(expired.runs), for_good


def _delete_traces(client: Any, expired: ExpiredRecords) -> int:
    ids = list(expired.trace_ids)
    return sum(
        int(client.delete_traces(expired.experiment_id, trace_ids=ids[i : i + _TRACE_IDS_PER_CALL]))
        for i in range(0, len(ids), _TRACE_IDS_PER_CALL)
    )


def _old_runs(client: Any, experiment_id: str, workflow: str, cutoff_ms: int) -> list[Any]:
    from mlflow.entities import ViewType

    query = f"tags.`{WORKFLOW_TAG}` = '{workflow}' and attributes.start_time < {cutoff_ms}"
    found: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=query,
            run_view_type=ViewType.ALL,
            max_results=_PAGE,
            page_token=token,
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


def _old_traces(client: Any, experiment_id: str, cutoff_ms: int) -> list[Any]:
    found: list[Any] = []
    token = None
    while True:
        page = client.search_traces(
            locations=[experiment_id],
            filter_string=f"trace.timestamp_ms < {cutoff_ms}",
            max_results=_PAGE,
            page_token=token,
            include_spans=False,
        )
        found.extend(trace.info for trace in page)
        token = page.token
        if not token:
            return found
