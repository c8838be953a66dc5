"""``agents_pipelines.WorkflowsComponent``: load a folder of workflows from a dg project.

    # defs/workflows/defs.yaml
    type: agents_pipelines.WorkflowsComponent
    attributes:
      path: .            # the folder holding the workflow files, relative to defs.yaml
      group: content     # optional: one group for every asset
      on_invalid: fail   # or skip: leave invalid files out, each logged as a warning

It builds exactly what the code location builds, through the same function.
"""

from __future__ import annotations

import dagster as dg

from agents_pipelines.orchestration.definitions_factory import OnInvalid, build_definitions
from agents_pipelines.orchestration.translator import WorkflowTranslator
from agents_pipelines.spec import Workflow


class _GroupTranslator(WorkflowTranslator):
    def __init__(self, group: str):
        self.group = group

    def get_asset_spec(self, workflow: Workflow) -> dg.AssetSpec:
        return super().get_asset_spec(workflow).replace_attributes(group_name=self.group)


class WorkflowsComponent(dg.Component, dg.Model, dg.Resolvable):
    """Every workflow YAML file in ``path`` as a Dagster asset (with its schedules,
    sensors and checks)."""

    path: str = "."
    group: str | None = None
    # A Literal, so that a typo (`skp`) is refused as the component loads, with the allowed
    # values, rather than quietly meaning "fail".
    on_invalid: OnInvalid = "fail"

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        translator = _GroupTranslator(self.group) if self.group else None
        return build_definitions(
            context.path / self.path,
            on_invalid=self.on_invalid,
            translator=translator,
        )
