"""agents_pipelines: LLM workflows in YAML, run as Dagster assets under MLflow tracing.

The data flows one way: ``spec`` (YAML → WorkflowSpec) → ``graph`` (LangGraph) →
``runner`` (run under ``tracking``, MLflow) → ``usage`` (tokens and cost) →
``orchestration`` (Dagster assets and metadata).
"""

from typing import TYPE_CHECKING, Any

from agents_pipelines.errors import (
    AgentsPipelinesError,
    InvalidInputsError,
    WorkflowConfigError,
    WorkflowRunError,
)
from agents_pipelines.spec import Workflow, WorkflowSpec, load_workflow

if TYPE_CHECKING:
    from agents_pipelines.orchestration.component import WorkflowsComponent
    from agents_pipelines.runner import RunResult, run_workflow

__all__ = [
    "AgentsPipelinesError",
    "InvalidInputsError",
    "RunResult",
    "Workflow",
    "WorkflowConfigError",
    "WorkflowRunError",
    "WorkflowSpec",
    "WorkflowsComponent",
    "load_workflow",
    "run_workflow",
]


def __getattr__(name: str) -> Any:
    # The runner pulls in LangGraph, LangChain and MLflow; import it on first use only, so
    # that loading the code location stays fast.
    if name in ("run_workflow", "RunResult"):
        from agents_pipelines import runner

        return getattr(runner, name)
    if name == "WorkflowsComponent":  # `type: agents_pipelines.WorkflowsComponent` in defs.yaml
        from agents_pipelines.orchestration.component import WorkflowsComponent

        return WorkflowsComponent
    raise AttributeError(f"module 'agents_pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too: `dg` finds components by scanning dir() of the module named in
    # the `dagster_dg_cli.registry_modules` entry point (see pyproject.toml).
    return sorted({*globals(), *__all__})
