"""The JSON Schema of the workflow format, for editors (``agents-pipelines schema``)."""

from __future__ import annotations

from typing import Any

from agents_pipelines.spec.models import WorkflowSpec

SCHEMA_ID = "https://agents-pipelines.dev/schema/workflow-v1.json"


def workflow_json_schema() -> dict[str, Any]:
    schema = WorkflowSpec.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "agents_pipelines workflow",
        **schema,
    }
