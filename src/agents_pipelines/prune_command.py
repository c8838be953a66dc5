"""``agents-pipelines prune``: delete what each workflow keeps past its
``config.observability.mlflow.retention_days``, or list it (``--dry-run``).

Per workflow: its MLflow runs, with their artifacts, and their traces
(tracking/run_retention.py); with a Dagster instance, its checkpoint threads and its
spend-journal rows (orchestration/retention.py). The development cache is shared by the
workflows that use it (one entry answers the same request from any of them) and is
disposable: its entries stored before the shortest retention of those workflows go.

The ``agents_pipelines_prune`` job of the code location runs the same, daily.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.llm.cache import CACHE_FILE, expired_entries
from agents_pipelines.spec import Workflow

DAY_S = 86_400


@dataclass(frozen=True)
class Removal:
    """What prune removed (or, in a dry run, would remove) of one kind for one workflow."""

    workflow: str
    kind: str
    items: tuple[str, ...]
    count: int
    note: str = ""


@dataclass(frozen=True)
class Retention:
    """One workflow to prune: its name, its asset key (user string) and its cutoff."""

    workflow: Workflow
    asset_key: str
    days: int
    cutoff_s: float


def retentions(
    workflows: Iterable[Workflow], asset_keys: Mapping[str, str], now: float
) -> list[Retention]:
    """The workflows with ``retention_days``, each with its cutoff."""
    chosen = []
    for workflow in workflows:
        days = workflow.spec.config.observability.mlflow.retention_days
        if days is not None:
            key = asset_keys.get(workflow.name, workflow.spec.flow.name)
            chosen.append(Retention(workflow, key, days, now - days * DAY_S))
    return chosen


def prune_workflows(
    workflows: Sequence[Workflow],
    *,
    dry_run: bool,
    instance: Any = None,
    asset_keys: Mapping[str, str] | None = None,
    cache_files: Iterable[Path] = (),
    now: float | None = None,
) -> list[Removal]:
    """Prune (or list) what ``workflows`` keep past their retention. ``instance``: the
    Dagster instance whose checkpoints and spend journal to prune (None: neither)."""
    now = time.time() if now is None else now
    chosen = retentions(workflows, asset_keys or {}, now)
    removals: list[Removal] = []
    shared = _shared_experiments(workflows)
    for retention in chosen:
        removals += _mlflow(retention, shared, dry_run)
        if instance is not None:
            from agents_pipelines.orchestration.retention import instance_removals

            removals += instance_removals(instance, retention, dry_run)
    files = list(cache_files)
    if instance is not None:
        files.append(Path(instance.storage_directory()) / CACHE_FILE)
    removals += _cache(chosen, files, dry_run)
    return removals


def _shared_experiments(workflows: Sequence[Workflow]) -> set[tuple[str, str]]:
    """The (tracking URI, experiment) pairs that more than one workflow logs to."""
    from agents_pipelines.tracking.tracking_settings import resolve_settings

    seen: dict[tuple[str, str], int] = {}
    for workflow in workflows:
        config = workflow.spec.config.observability.mlflow
        if config.enabled:
            settings = resolve_settings(config, workflow.name)
            pair = (settings.tracking_uri, settings.experiment_name)
            seen[pair] = seen.get(pair, 0) + 1
    return {pair for pair, count in seen.items() if count > 1}


def _mlflow(retention: Retention, shared: set[tuple[str, str]], dry_run: bool) -> list[Removal]:
    config = retention.workflow.spec.config.observability.mlflow
    if not config.enabled:
        return []
    from agents_pipelines.tracking.run_retention import delete_expired, find_expired
    from agents_pipelines.tracking.tracking_settings import resolve_settings

    name = retention.workflow.name
    settings = resolve_settings(config, name)
    is_shared = (settings.tracking_uri, settings.experiment_name) in shared
    try:
        expired = find_expired(settings, name, int(retention.cutoff_s * 1000), is_shared)
        runs, traces, for_good = len(expired.runs), len(expired.trace_ids), True
        if not dry_run:
            traces, runs, for_good = delete_expired(expired)
    except Exception as exc:  # MLflow's errors, and a store it cannot reach
        raise AgentsPipelinesError(
            f"Pruning workflow {name} in MLflow at {settings.tracking_uri} failed: {exc}. "
            "What was deleted before stays deleted; once MLflow is reachable, run prune "
            "again: it picks up where it stopped."
        ) from exc
    note = (
        ""
        if for_good
        else f"soft-deleted only: {settings.tracking_uri} cannot be asked to delete runs for "
        "good; run `mlflow gc` where its backend store is"
    )
    run_items = tuple(
        f"{run.info.run_id} (started {_utc(run.info.start_time / 1000)})" for run in expired.runs
    )
    return [
        Removal(name, "MLflow runs", run_items, runs, note),
        Removal(name, "MLflow traces", expired.trace_ids, traces),
    ]


def _cache(chosen: Sequence[Retention], files: Sequence[Path], dry_run: bool) -> list[Removal]:
    users = [r for r in chosen if r.workflow.spec.config.execution.cache is not None]
    if not users:
        return []
    shortest = min(users, key=lambda r: r.days)
    names = ", ".join(sorted(r.workflow.name for r in users))
    removals = []
    for path in dict.fromkeys(files):  # one count per file, in order
        count = expired_entries(path, shortest.cutoff_s, delete=not dry_run)
        note = f"{path}; older than {shortest.days} day(s), the shortest retention of: {names}"
        removals.append(Removal("(development cache)", "cache entries", (), count, note))
    return removals


def render(removals: Sequence[Removal], workflows: Sequence[Workflow], dry_run: bool) -> str:
    """The report: counts per workflow and kind; a dry run also lists each item."""
    verb = "would remove" if dry_run else "removed"
    pruned = sum(1 for w in workflows if w.spec.config.observability.mlflow.retention_days)
    lines = [
        f"{len(workflows)} workflow(s), {pruned} with retention_days"
        + (" (dry run: nothing deleted)" if dry_run else "")
    ]
    workflow = None
    for removal in removals:
        if removal.workflow != workflow:
            workflow = removal.workflow
            lines.append(f"{workflow}:")
        note = f" ({removal.note})" if removal.note else ""
        lines.append(f"  {verb} {removal.count} {removal.kind}{note}")
        if dry_run:
            lines += [f"    - {item}" for item in removal.items]
    total = sum(r.count for r in removals)
    lines.append(f"{verb} {total} item(s) in all")
    return "\n".join(lines)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")
