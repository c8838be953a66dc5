"""Where a materialization's inputs come from, lowest precedence first:
``orchestration.inputs`` (applied by the runner), the static partition's inputs, the fields
mapped from upstream workflows, the run config the user or a sensor gave, and finally a
time partition's key, which no other value may contradict (the field is left out of the
run config, and load refuses a default for it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents_pipelines.spec.models import WorkflowSpec


def resolve_inputs(
    spec: WorkflowSpec,
    partition_key: str | None,
    config: Mapping[str, Any],
    upstream: Mapping[str, Any],
) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    partitions = spec.orchestration.partitions
    if partition_key is not None and partitions is not None and partitions.static:
        inputs |= partitions.static.get(partition_key, {})
    for dep in spec.orchestration.deps:
        state = upstream.get(dep.workflow)
        if isinstance(state, Mapping):
            inputs |= {
                target: state[source] for target, source in dep.map.items() if source in state
            }
    inputs |= config
    if partition_key is not None and (field := time_key_field(spec)) is not None:
        inputs[field] = partition_key
    return inputs


def time_key_field(spec: WorkflowSpec) -> str | None:
    """The input a time partition's key is written to, if the workflow has time partitions."""
    partitions = spec.orchestration.partitions
    time = partitions.time if partitions is not None else None
    return time[1].field if time is not None else None


def fed_fields(spec: WorkflowSpec) -> set[str]:
    """Inputs whose value may come from a static or dynamic partition or an upstream
    workflow: their run config has no default, so that an unset field does not hide those
    values. (A time partition fills one field only, which the run config leaves out.)"""
    fed = {target for dep in spec.orchestration.deps for target in dep.map}
    partitions = spec.orchestration.partitions
    if partitions is not None and partitions.time is None:
        fed |= set(spec.input_fields)
    return fed
