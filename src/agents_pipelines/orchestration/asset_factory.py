"""Build one Dagster asset per workflow, with a typed Launchpad config."""

# No `from __future__ import annotations`: Dagster reads the asset function's annotations.
import inspect
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

import dagster as dg

from agents_pipelines.orchestration.checks import check_specs
from agents_pipelines.orchestration.inputs import fed_fields, time_key_field
from agents_pipelines.orchestration.resource import StepEvent, WorkflowRunner
from agents_pipelines.orchestration.translator import WorkflowTranslator
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.models import WorkflowSpec

RUNNER_KEY = "workflow_runner"
DEFAULT_IO_MANAGER_KEY = "io_manager"  # what @asset used: Definitions supply one by default
_IO_MANAGER_METADATA = "dagster/io_manager_key"  # where AssetSpec.with_io_manager_key puts it

_SCALARS: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool}


def build_workflow_asset(
    workflow: Workflow, translator: WorkflowTranslator | None = None
) -> dg.AssetsDefinition:
    spec = asset_spec(workflow, translator)
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
    # The spec goes in whole, so every field a translator sets (deps, owners, tags, any field
    # Dagster adds later) reaches the asset; only what belongs to the op is passed beside it.
    return dg.multi_asset(
        name=spec.key.to_python_identifier(),  # the op name, as run config addresses it
        specs=[spec],
        ins=ins,
        config_schema=run_config_schema(workflow.spec),
        pool=orchestration.pool,
        # No retry_policy: the step requests its own retries (see attempts.py), so that
        # Dagster never turns a stopped run into a retry.
        check_specs=check_specs(workflow, spec.key),
        backfill_policy=backfill_policy(workflow),
    )(_workflow_asset)


def backfill_policy(workflow: Workflow) -> dg.BackfillPolicy | None:
    """``orchestration.backfill``: Dagster's multi-run policy, so that a backfill (or a
    range selected in the UI) puts that many partitions in each run. None: Dagster's
    default, one run per partition."""
    backfill = workflow.spec.orchestration.backfill
    if backfill is None:
        return None
    return dg.BackfillPolicy.multi_run(backfill.max_partitions_per_run)


def asset_spec(workflow: Workflow, translator: WorkflowTranslator | None = None) -> dg.AssetSpec:
    """The translator's spec, plus what the asset function needs of it: the upstream
    workflows among its deps (Dagster wants every input to be a dep, and a translator may
    have replaced the deps), and an IO manager, which stores the final state for them."""
    spec = (translator or WorkflowTranslator()).get_asset_spec(workflow)
    present = {dep.asset_key for dep in spec.deps}
    upstream = [dg.AssetKey(dep.workflow) for dep in workflow.spec.orchestration.deps]
    if missing := [key for key in upstream if key not in present]:
        spec = spec.merge_attributes(deps=missing)
    if _IO_MANAGER_METADATA not in spec.metadata:
        spec = spec.with_io_manager_key(DEFAULT_IO_MANAGER_KEY)
    return spec


# Module-level, not in the registry: a pure memo of immutable code objects, never stale.
_SIGNATURES: dict[CodeType, inspect.Signature] = {}


def _shared_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """Every asset function is made by the same ``def``, so all share one signature."""
    code = fn.__code__
    if (signature := _SIGNATURES.get(code)) is None:
        signature = _SIGNATURES[code] = inspect.signature(fn)
    return signature


def run_config_schema(spec: WorkflowSpec) -> dict[str, dg.Field]:
    """One typed field per input; ``orchestration.inputs`` become the defaults, except for
    fields a partition or an upstream workflow may fill (they stay unset until given). The
    field a time partition's key fills is left out: the run's partition gives it."""
    schema = {}
    fed = fed_fields(spec)
    key_field = time_key_field(spec)
    for name in spec.input_fields:
        if name == key_field:
            continue
        field = spec.state.fields[name]
        config_type = _choice_type(spec, name) or _config_type(field.type)
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


def _choice_type(spec: WorkflowSpec, name: str) -> Any:
    """A str field with choices (or a list of them) is a Dagster Enum: the Launchpad offers
    the choices and refuses any other value before the run starts. Int choices stay Int:
    an Enum's values are names in run config, so a schedule's or a sensor's `3` would not
    fit it. The name is unique per workflow and field, as Dagster requires."""
    field = spec.state.fields[name]
    if not field.choices or field.type not in ("str", "list[str]"):
        return None
    enum = dg.Enum(f"{spec.flow.name}__{name}", [dg.EnumValue(str(c)) for c in field.choices])
    return [enum] if field.type == "list[str]" else enum


def _config_type(type_name: str) -> Any:
    if type_name in _SCALARS:
        return _SCALARS[type_name]
    if type_name.startswith("list["):
        return [_SCALARS[type_name[5:-1]]]
    value = type_name.removeprefix("dict[str, ").removesuffix("]")
    return dg.Permissive() if value == "Any" else dg.Map(str, _SCALARS[value])
