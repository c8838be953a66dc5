"""The default IO manager of workflow assets: Dagster's filesystem one, which also stores
the output of a run over several partitions.

Dagster's ``FilesystemIOManager`` refuses an output for more than one partition ("does not
support persisting an output associated with multiple partitions"). A range run
(partition_range.py) hands its IO manager ``{partition: final state}``; this one gives each
state to the filesystem IO manager as the output of that partition alone, so it lands
where a run of the partition would have written it, and loading a partition, or a range
(Dagster's ``{partition: value}``), is unchanged. Another IO manager given as
``io_manager`` receives the same mapping for a range.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg


class RangeFilesystemIOManager(dg.IOManager):
    """``inner`` (Dagster's filesystem IO manager), one partition at a time."""

    def __init__(self, inner: dg.IOManager):
        self.inner = inner

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        keys = context.asset_partition_keys if context.has_asset_partitions else []
        if len(keys) <= 1:
            self.inner.handle_output(context, obj)
            return
        if not isinstance(obj, Mapping) or set(obj) != set(keys):
            raise dg.DagsterInvariantViolationError(
                f"The output of {context.asset_key.to_user_string()} covers {len(keys)} "
                "partitions: it must map each of them to its value."
            )
        for key in keys:
            one = dg.build_output_context(
                asset_key=context.asset_key,
                partition_key=key,
                asset_partitions_def=context.asset_partitions_def,
                run_id=context.run_id,
                step_key=context.step_key,
                name=context.name,
                # The step's own resources: given a mapping (or none), the context builds
                # them anew on a new ephemeral Dagster instance, about 90 ms of CPU per
                # partition (its SQLite storage's migrations): 3.7 s for a range of 40.
                resources=context.resources,
            )
            self.inner.handle_output(one, obj[key])

    def load_input(self, context: dg.InputContext) -> Any:
        return self.inner.load_input(context)


class WorkflowIOManager(dg.FilesystemIOManager):
    """``FilesystemIOManager``'s settings (``base_dir``, default the instance's storage
    folder), with range outputs stored per partition."""

    def create_io_manager(self, context: dg.InitResourceContext) -> RangeFilesystemIOManager:  # type: ignore[override]
        return RangeFilesystemIOManager(super().create_io_manager(context))
