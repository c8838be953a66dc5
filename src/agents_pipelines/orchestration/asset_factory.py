"""Build one Dagster asset per workflow, with a typed Launchpad config."""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.

from typing import Any

import dagster as dg

from agents_pipelines.orchestration.resource import WorkflowRunner
from agents_pipelines.orchestration.translator import WorkflowTranslator
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import WorkflowSpec

RUNNER_KEY = "workflow_runner"

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool}


def build_workflow_asset(
    workflow: Workflow, translator: WorkflowTranslator | None = None
) -> dg.AssetsDefinition:
    spec = (translator or WorkflowTranslator()).get_asset_spec(workflow)

    @dg.asset(
        key=spec.key,
        group_name=spec.group_name,
        description=spec.description,
        kinds=spec.kinds,
        metadata=spec.metadata,
        code_version=spec.code_version,
        config_schema=run_config_schema(workflow.spec),
        pool=workflow.spec.orchestration.pool,
    )
    def _workflow_asset(
        context: dg.AssetExecutionContext, workflow_runner: WorkflowRunner
    ) -> dg.Output[dict[str, Any]]:
        inputs = dict(context.op_execution_context.op_config or {})
        return workflow_runner.materialize(context, workflow, inputs)

    return _workflow_asset


def run_config_schema(spec: WorkflowSpec) -> dict[str, dg.Field]:
    """One typed field per input; ``orchestration.inputs`` become the defaults."""
    schema = {}
    for name in spec.input_fields:
        field = spec.state.fields[name]
        config_type = _config_type(field.type)
        description = field.description or None
        if name in spec.orchestration.inputs:
            schema[name] = dg.Field(
                config_type,
                default_value=spec.orchestration.inputs[name],
                is_required=False,
                description=description,
            )
        elif field.required:
            schema[name] = dg.Field(config_type, is_required=True, description=description)
        elif field.default is not None:
            schema[name] = dg.Field(
                config_type, default_value=field.default, is_required=False, description=description
            )
        else:
            schema[name] = dg.Field(config_type, is_required=False, description=description)
    return schema


def _config_type(type_name: str) -> Any:
    if type_name in _SCALARS:
        return _SCALARS[type_name]
    if type_name.startswith("list["):
        return [_SCALARS[type_name[5:-1]]]
    value = type_name.removeprefix("dict[str, ").removesuffix("]")
    return dg.Permissive() if value == "Any" else dg.Map(str, _SCALARS[value])
