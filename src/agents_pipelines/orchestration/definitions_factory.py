"""Build Dagster Definitions from a folder of workflow files.

When a file is invalid, the default is to fail the whole code location with every
problem listed (``on_invalid="fail"``), as Dagster does for a Python error in any asset
module: a broken file must not silently drop an asset and its schedules. Set
AGENTS_PIPELINES_INVALID_WORKFLOWS=skip to load the valid files and log the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import dagster as dg

from agents_pipelines.errors import AgentsPipelinesError, ConfigIssue, WorkflowConfigError
from agents_pipelines.orchestration.asset_factory import (
    DEFAULT_IO_MANAGER_KEY,
    RUNNER_KEY,
    build_workflow_asset,
)
from agents_pipelines.orchestration.automation import (
    build_inbox_sensor,
    build_schedule,
    workflow_job,
)
from agents_pipelines.orchestration.executors import executor_from_settings
from agents_pipelines.orchestration.range_io_manager import WorkflowIOManager
from agents_pipelines.orchestration.resource import WorkflowRunner
from agents_pipelines.orchestration.retention import build_prune_job
from agents_pipelines.orchestration.translator import WorkflowTranslator
from agents_pipelines.redaction import redacting_logger
from agents_pipelines.settings import WORKFLOWS_DIR_ENV, settings
from agents_pipelines.spec import Workflow, load_workflows
from agents_pipelines.spec.prompt_refs import has_registry_prompts

logger = redacting_logger(__name__)
OnInvalid = Literal["fail", "skip"]


def build_workflow_assets(
    workflows: Iterable[Workflow], translator: WorkflowTranslator | None = None
) -> list[dg.AssetsDefinition]:
    return [build_workflow_asset(workflow, translator) for workflow in workflows]


def build_workflow_definitions(
    workflows: Iterable[Workflow],
    translator: WorkflowTranslator | None = None,
    runner: WorkflowRunner | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """Assets, plus a job, schedule and sensor for each workflow that asks for them, and
    the daily ``agents_pipelines_prune`` job when a workflow sets ``retention_days``.

    ``executor`` defaults to the one AGENTS_PIPELINES_EXECUTOR names (see executors.py);
    pass another to run steps elsewhere."""
    assets, jobs, schedules, sensors = [], [], [], []
    workflows = list(workflows)
    for workflow in workflows:
        asset = build_workflow_asset(workflow, translator)
        assets.append(asset)
        orchestration = workflow.spec.orchestration
        # A job for what launches it: a schedule, a sensor, or a partition range from the
        # CLI (`dagster job execute --tags`; `asset materialize --partition-range` takes
        # single-run policies only).
        launchers = (orchestration.schedule, orchestration.sensor, orchestration.backfill)
        if all(launcher is None for launcher in launchers):
            continue
        job = workflow_job(workflow, asset)
        jobs.append(job)
        if (schedule := build_schedule(workflow, asset, job)) is not None:
            schedules.append(schedule)
        if (sensor := build_inbox_sensor(workflow, asset, job)) is not None:
            sensors.append(sensor)
    asset_keys = {w.name: a.key.to_user_string() for w, a in zip(workflows, assets, strict=True)}
    if (pruning := build_prune_job(workflows, asset_keys)) is not None:
        jobs.append(pruning[0])
        schedules.append(pruning[1])
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        # Dagster's filesystem IO manager, which also stores a range run's output.
        resources={
            RUNNER_KEY: runner or WorkflowRunner(),
            DEFAULT_IO_MANAGER_KEY: WorkflowIOManager(),
        },
        executor=executor or executor_from_settings(),
    )


def build_definitions(
    workflows_dir: str | Path,
    *,
    on_invalid: OnInvalid = "fail",
    translator: WorkflowTranslator | None = None,
    runner: WorkflowRunner | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    directory = Path(workflows_dir)
    if not directory.is_dir():
        raise AgentsPipelinesError(
            f"Workflow folder {directory.resolve()} does not exist: create it, or point "
            f"{WORKFLOWS_DIR_ENV} at the folder that holds your workflow YAML files."
        )
    workflows, issues = load_workflows([directory])
    workflows, registry_issues = read_registry(workflows)
    issues += registry_issues
    if issues and on_invalid == "fail":
        raise WorkflowConfigError(issues)
    for issue in issues:
        logger.warning("Skipped invalid workflow: %s", issue)
    if issues:
        workflows = _without_broken_dependencies(workflows, issues)
    return build_workflow_definitions(workflows, translator, runner, executor)


def read_registry(workflows: list[Workflow]) -> tuple[list[Workflow], list[ConfigIssue]]:
    """The workflows with the MLflow registry prompts they name read (tracking.
    prompt_registry.at_load), and their problems: a missing prompt fails the code location
    as a bad file does. Without a registry prompt, MLflow is not even imported."""
    if not any(has_registry_prompts(w.spec) for w in workflows):
        return workflows, []
    from agents_pipelines.tracking.prompt_registry import at_load

    return at_load(workflows)


def _without_broken_dependencies(workflows: list[Workflow], issues: list) -> list[Workflow]:
    """In skip mode, also leave out workflows whose upstream was left out."""
    bad_files = {issue.file for issue in issues}
    kept = [w for w in workflows if str(w.path) not in bad_files]
    while True:
        names = {w.name for w in kept}
        still = [w for w in kept if all(d.workflow in names for d in w.spec.orchestration.deps)]
        if len(still) == len(kept):
            return still
        kept = still


def definitions_from_env() -> dg.Definitions:
    """The code location: AGENTS_PIPELINES_WORKFLOWS_DIR (default ./workflows)."""
    environment = settings()
    _announce_backend()
    return build_definitions(environment.workflows_dir, on_invalid=environment.invalid_workflows)


def _announce_backend() -> None:
    from agents_pipelines.llm.backend import Backend, resolve_backend

    if resolve_backend() is Backend.SIMULATED:
        logger.warning(
            "AGENTS_PIPELINES_LLM_BACKEND=simulated: materializations run the SIMULATED model. "
            "No Gemini calls are made; token counts and costs are estimates."
        )
