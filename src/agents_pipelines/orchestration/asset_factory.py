"""Build one Dagster asset per workflow, with a typed Launchpad config."""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
import inspect
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

import dagster as dg

from agents_pipelines.orchestration.checks import check_specs
from agents_pipelines.orchestration.inputs import fed_fields
from agents_pipelines.orchestration.resource import StepEvent, WorkflowRunner
from agents_pipelines.orchestration.translator import WorkflowTranslator
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import WorkflowSpec

RUNNER_KEY = "workflow_runner"

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool}


def build_workflow_asset(
    workflow: Workflow, translator: WorkflowTranslator | None = None
) -> dg.AssetsDefinition:
    spec = (translator or WorkflowTranslator()).get_asset_spec(workflow)
    orchestration = workflow.spec.orchestration
    # Upstream workflows are inputs (not plain deps): their final state feeds ours.
    ins = {dep.workflow: dg.AssetIn(key=dg.AssetKey(dep.workflow)) for dep in orchestration.deps}

    def _workflow_asset(
        context: dg.AssetExecutionContext, workflow_runner: WorkflowRunner, **upstream: Any
    ) -> Iterator[StepEvent]:
        yield from workflow_runner.materialize(context, workflow, upstream)

    # Dagster reads the function's signature and type hints some 25 times per asset; they are
    # the same for every workflow, so hand it the signature worked out once (Dagster takes
    # the hints from an explicit __signature__ too).
    _workflow_asset.__signature__ = _shared_signature(_workflow_asset)  # type: ignore[attr-defined]
    return dg.asset(
        key=spec.key,
        group_name=spec.group_name,
        description=spec.description,
        kinds=spec.kinds,
        metadata=spec.metadata,
        tags=spec.tags,
        owners=spec.owners,
        code_version=spec.code_version,
        ins=ins,
        partitions_def=spec.partitions_def,
        automation_condition=spec.automation_condition,
        config_schema=run_config_schema(workflow.spec),
        pool=orchestration.pool,
        # No retry_policy: the step requests its own retries (see attempts.py), so that
        # Dagster never turns a stopped run into a retry.
        check_specs=check_specs(workflow, spec.key),
    )(_workflow_asset)


_SIGNATURES: dict[CodeType, inspect.Signature] = {}


def _shared_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """Every asset function is made by the same ``def``, so all share one signature."""
    code = fn.__code__
    if (signature := _SIGNATURES.get(code)) is None:
        signature = _SIGNATURES[code] = inspect.signature(fn)
    return signature


def run_config_schema(spec: WorkflowSpec) -> dict[str, dg.Field]:
    """One typed field per input; ``orchestration.inputs`` become the defaults, except for
    fields a partition or an upstream workflow may fill (they stay unset until given)."""
    schema = {}
    fed = fed_fields(spec)
    for name in spec.input_fields:
        field = spec.state.fields[name]
        config_type = _config_type(field.type)
        description = field.description or None
        default = spec.orchestration.inputs.get(name, field.default)
        if name in fed or (default is None and not field.required):
            schema[name] = dg.Field(config_type, is_required=False, description=description)
        elif default is None:
            schema[name] = dg.Field(config_type, is_required=True, description=description)
        else:
            schema[name] = dg.Field(
                config_type, default_value=default, is_required=False, description=description
            )
    return schema


def _config_type(type_name: str) -> Any:
    if type_name in _SCALARS:
        return _SCALARS[type_name]
    if type_name.startswith("list["):
        return [_SCALARS[type_name[5:-1]]]
    value = type_name.removeprefix("dict[str, ").removesuffix("]")
    return dg.Permissive() if value == "Any" else dg.Map(str, _SCALARS[value])
