"""Where a materialization's inputs come from, lowest precedence first:
``orchestration.inputs`` (applied by the runner), the partition's inputs, the fields mapped
from upstream workflows, and finally the run config the user or a sensor gave."""

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
    return inputs | dict(config)


def fed_fields(spec: WorkflowSpec) -> set[str]:
    """Inputs whose value may come from a partition or an upstream workflow: their run
    config has no default, so that an unset field does not hide those values."""
    fed = {target for dep in spec.orchestration.deps for target in dep.map}
    if spec.orchestration.partitions is not None:
        fed |= set(spec.input_fields)
    return fed
