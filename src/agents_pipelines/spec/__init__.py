"""Workflow files: YAML → validated, pure-pydantic ``WorkflowSpec``."""

from agents_pipelines.spec.json_schema import workflow_json_schema
from agents_pipelines.spec.loader import (
    Workflow,
    load_workflow,
    load_workflow_text,
    load_workflows,
    workflow_files,
)
from agents_pipelines.spec.mermaid import draw_mermaid
from agents_pipelines.spec.models import END, START, WorkflowSpec

__all__ = [
    "END",
    "START",
    "Workflow",
    "WorkflowSpec",
    "draw_mermaid",
    "load_workflow",
    "load_workflow_text",
    "load_workflows",
    "workflow_files",
    "workflow_json_schema",
]
