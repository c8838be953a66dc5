"""How a workflow appears in Dagster: subclass and override ``get_asset_spec``."""

from __future__ import annotations

import warnings

import dagster as dg

from agents_pipelines.estimate_command import no_key_estimate
from agents_pipelines.orchestration.partitions import partitions_def
from agents_pipelines.spec import Workflow, draw_mermaid

KINDS = frozenset({"langgraph", "gemini", "mlflow"})


class WorkflowTranslator:
    """Maps a Workflow to its AssetSpec (key, group, description, kinds, metadata)."""

    def get_asset_spec(self, workflow: Workflow) -> dg.AssetSpec:
        spec = workflow.spec
        return dg.AssetSpec(
            key=dg.AssetKey(spec.flow.name),
            group_name=spec.orchestration.group,
            description=spec.flow.description or None,
            kinds=set(KINDS),
            # Dagster shows the asset as changed when the YAML, or the Python it names, changes.
            code_version=workflow.version_sha256()[:16],
            deps=[dg.AssetDep(dg.AssetKey(dep.workflow)) for dep in spec.orchestration.deps],
            partitions_def=partitions_def(workflow),
            automation_condition=_automation(workflow),
            metadata={
                "dagster/code_references": _code_reference(workflow),
                "graph": dg.MetadataValue.md(f"```mermaid\n{draw_mermaid(spec)}```"),
                "nodes": dg.MetadataValue.json(
                    [
                        {
                            "id": n.id,
                            "outputs": list(n.outputs),
                            "model": spec.config.llm.merged(n.llm).model,
                        }
                        if n.calls_llm
                        else {"id": n.id, "outputs": list(n.outputs), "function": n.function}
                        for n in spec.nodes
                    ]
                ),
                "models": dg.MetadataValue.json(spec.models_used()),
                **_estimate_metadata(workflow),
                "workflow_file": dg.MetadataValue.path(str(workflow.path)),
            },
        )


def _estimate_metadata(workflow: Workflow) -> dict[str, dg.MetadataValue]:
    """One run's estimate with the default inputs, counted without a key (no network while
    the code location loads): what the Launchpad shows before a run is launched."""
    estimate = no_key_estimate(workflow)
    return {
        "estimated_total_tokens": dg.MetadataValue.int(estimate.total_tokens),
        "estimated_cost_usd": dg.MetadataValue.float(estimate.cost_usd),
        "estimate": dg.MetadataValue.md(
            f"One run, by `agents-pipelines estimate` without a key: "
            f"{estimate.input_tokens} input and {estimate.output_tokens} output tokens, "
            f"${estimate.cost_usd:.6f} USD"
            + "".join(f"\n- assumed: {note}" for note in estimate.stand_ins)
            + "".join(f"\n- price of {m}: {s}" for m, s in estimate.price_sources.items())
            + "".join(f"\n- no price for {model}" for model in estimate.unpriced_models)
        ),
    }


def _automation(workflow: Workflow) -> dg.AutomationCondition | None:
    automation = workflow.spec.orchestration.automation
    if automation is None:
        return None
    if automation == "eager":
        return dg.AutomationCondition.eager()
    return dg.AutomationCondition.on_cron(automation.on_cron, automation.timezone)


def _code_reference(workflow: Workflow) -> dg.CodeReferencesMetadataValue:
    # Code references are a beta API in Dagster 1.13; we use them on purpose, so the
    # BetaWarning would only be noise in every code-location load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.CodeReferencesMetadataValue(
            code_references=[
                dg.LocalFileCodeReference(
                    file_path=str(workflow.path.resolve()), line_number=1, label="Workflow YAML"
                )
            ]
        )
