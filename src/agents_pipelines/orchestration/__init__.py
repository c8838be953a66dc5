"""The one home of Dagster: assets, the runner resource and Definitions (and, in
``stores/``, what agents_pipelines keeps beside a Dagster instance)."""

from agents_pipelines.orchestration.asset_factory import build_workflow_asset, run_config_schema
from agents_pipelines.orchestration.component import WorkflowsComponent
from agents_pipelines.orchestration.definitions_factory import (
    build_definitions,
    build_workflow_assets,
    build_workflow_definitions,
    definitions_from_env,
)
from agents_pipelines.orchestration.range_io_manager import WorkflowIOManager
from agents_pipelines.orchestration.resource import WorkflowRunner
from agents_pipelines.orchestration.translator import WorkflowTranslator

__all__ = [
    "WorkflowIOManager",
    "WorkflowRunner",
    "WorkflowTranslator",
    "WorkflowsComponent",
    "build_definitions",
    "build_workflow_asset",
    "build_workflow_assets",
    "build_workflow_definitions",
    "definitions_from_env",
    "run_config_schema",
]
