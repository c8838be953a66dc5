"""``agents-pipelines estimate``: one run's expected tokens and USD, before spending.

The glue of usage.estimate (the arithmetic) with its two counters, Gemini's countTokens
(llm.token_count) when a key is set and characters / 4 when not, and with the run's price
table (tracking.MlflowPriceTable: MLflow's bundled prices, config.pricing over them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents_pipelines.settings import settings
from agents_pipelines.spec import Workflow
from agents_pipelines.spec.field_types import zero_value
from agents_pipelines.spec.models import WorkflowSpec
from agents_pipelines.tracking.pricing import BundledCatalogPrices, MlflowPriceTable
from agents_pipelines.usage.estimate import (
    Estimate,
    TokenCounter,
    chars_per_token,
    estimate_run,
)

COUNTED_BY_GEMINI = "Gemini countTokens"
COUNTED_BY_CHARS = "characters / 4 (no GOOGLE_API_KEY)"

__all__ = ["estimate_workflow", "no_key_estimate", "render_estimate"]


def estimate_workflow(
    workflow: Workflow, inputs: Mapping[str, Any], *, items: int | None = None
) -> Estimate:
    """With ``inputs`` over the defaults and ``orchestration.inputs``. Bad inputs raise
    InvalidInputsError, as for a run; a required input left out is sized by a stand-in."""
    spec = workflow.spec
    values = _checked_values(spec, inputs)
    pricer = MlflowPriceTable(spec.config.pricing)
    counter: TokenCounter
    if settings().api_key is None:
        counter, counted_by = chars_per_token, COUNTED_BY_CHARS
    else:
        from agents_pipelines.llm.token_count import count_tokens

        counter, counted_by = count_tokens, COUNTED_BY_GEMINI
    return estimate_run(spec, values, counter, pricer, counted_by=counted_by, items=items)


def no_key_estimate(workflow: Workflow) -> Estimate:
    """The definition-time estimate: default inputs, characters / 4, no network, and MLflow's
    prices read without importing mlflow (the code location loads in seconds less)."""
    spec = workflow.spec
    values = {**_defaults(spec), **spec.orchestration.inputs}
    pricer = BundledCatalogPrices(spec.config.pricing)
    return estimate_run(spec, values, chars_per_token, pricer, counted_by=COUNTED_BY_CHARS)


def _defaults(spec: WorkflowSpec) -> dict[str, Any]:
    return {
        name: field.default
        for name, field in spec.state.fields.items()
        if field.default is not None and name in spec.input_fields
    }


def _checked_values(spec: WorkflowSpec, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's start state as ``initial_state`` checks it, less the required inputs not
    given (stand-ins size those): a filler lets the check of the others go through."""
    from agents_pipelines.graph.state import initial_state

    given = {**spec.orchestration.inputs, **inputs}
    missing = [
        name
        for name, field in spec.state.fields.items()
        if field.required and name not in given and name in spec.input_fields
    ]
    fillers = {name: _filler(spec, name) for name in missing}
    state = initial_state(spec, {**fillers, **inputs})
    return {name: value for name, value in state.items() if name not in missing}


def _filler(spec: WorkflowSpec, name: str) -> Any:
    field = spec.state.fields[name]
    if field.choices and not field.type.startswith("list"):
        return field.choices[0]
    return zero_value(field.type)


def render_estimate(estimate: Estimate, partitions: int | None = None) -> str:
    """The CLI's table: one row per node, then one run, N partitions and the price sources."""
    lines = [f"Estimate of {estimate.workflow} (input tokens: {estimate.counted_by})"]
    lines.append(f"  {'node':<20} {'model':<24} {'calls':>6} {'input':>9} {'output':>9}  cost")
    for node in estimate.nodes:
        cost = "no price" if node.cost_usd is None else f"${node.cost_usd:.6f}"
        lines.append(
            f"  {node.node:<20} {node.priced_as:<24} {node.calls:>6} {node.input_tokens:>9} "
            f"{node.output_tokens:>9}  {cost}"
        )
    lines.append(_total("one run", estimate))
    if partitions:
        lines.append(_total(f"{partitions} partitions", estimate.times(partitions)))
    for model, source in sorted(estimate.price_sources.items()):
        lines.append(f"  price of {model}: {source}")
    for model in estimate.unpriced_models:
        lines.append(f"  price of {model}: none (add it to config.pricing); counted as $0")
    for stand_in in estimate.stand_ins:
        lines.append(f"  assumed: {stand_in}")
    return "\n".join(lines)


def _total(label: str, estimate: Estimate) -> str:
    return (
        f"  {label}: {estimate.total_tokens} tokens ({estimate.input_tokens} input, "
        f"{estimate.output_tokens} output), ${estimate.cost_usd:.6f} USD"
    )
