"""The metadata keys of a workflow asset are declared once (orchestration/metadata_sets.py):
every key a run writes belongs to a set, a set reads back what was written, and a writer
that sets an undeclared key fails, naming it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from agents_pipelines.orchestration import build_definitions
from agents_pipelines.orchestration.metadata_sets import (
    AttemptMetadata,
    BudgetCheckMetadata,
    EvalCheckMetadata,
    OutputCheckMetadata,
    RunMetadata,
    UsageMetadata,
)
from conftest import workflow_yaml, write

CHECKED = (
    workflow_yaml(
        "checked",
        ("one", "One {topic}", "a"),
        ("two", "Two {a}", "b"),
        orchestration=(
            "inputs: {topic: cats}\n"
            "budget: {max_cost_usd: 1.0}\n"
            "spend_limits: [{per: day, max_cost_usd: 5}]\n"
            "checks: [{field: b, min_length: 1}]"
        ),
    )
    + "evals:\n  - {name: has_b, rule: {field: b, min_length: 1}}\n"
)


def test_every_key_a_run_writes_is_declared_and_reads_back(
    tmp_path: Path, mlflow_uri: str, simulated: None
) -> None:
    write(tmp_path, CHECKED)
    asset = build_definitions(tmp_path).resolve_assets_def("checked")
    result = dg.materialize([asset])
    assert result.success
    (event,) = result.asset_materializations_for_node("checked")
    ours = set(event.metadata) - {"path"}  # `path`: the filesystem IO manager's own key
    assert ours <= UsageMetadata.keys() | RunMetadata.keys()
    usage, run = UsageMetadata.extract(event.metadata), RunMetadata.extract(event.metadata)
    assert (usage.llm_calls, run.node_count, run.llm_backend) == (2, 2, "simulated")
    assert usage.total_cost_usd == event.metadata["total_cost_usd"].value
    assert isinstance(usage.node_calls, dg.TableMetadataValue)  # a table stays a table
    assert len(usage.node_calls.records) == 2
    assert run.mlflow_run_url is not None and run.mlflow_run_url.url.startswith("http")

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    sets = {"budget": BudgetCheckMetadata, "b_min_length_1": OutputCheckMetadata}
    sets["has_b"] = EvalCheckMetadata
    assert set(checks) == set(sets)
    for name, declared in sets.items():
        assert set(checks[name].metadata) <= declared.keys(), name
    budget = BudgetCheckMetadata.extract(checks["budget"].metadata)
    assert (budget.max_cost_usd, budget.spent_this_day_limit_usd) == (1.0, 5.0)
    assert budget.spent_this_day_usd == usage.total_cost_usd  # the first run of the day
    assert EvalCheckMetadata.extract(checks["has_b"].metadata).verdict == "pass"


def test_a_set_refuses_a_key_it_does_not_declare() -> None:
    with pytest.raises(ValidationError, match="total_cost"):
        UsageMetadata(total_cost=0.5)  # type: ignore[call-arg]


def test_an_attempt_reads_back_as_written_with_its_types() -> None:
    written = AttemptMetadata(
        attempt=2, outcome="retried", llm_calls=3, total_tokens=615, total_cost_usd=0, error=""
    )
    observation = dg.AssetObservation(asset_key="a", metadata=written.as_metadata())
    # A cost of 0 is still a float (the UI plots one series), and reads back equal.
    assert isinstance(observation.metadata["total_cost_usd"], dg.FloatMetadataValue)
    assert AttemptMetadata.extract(observation.metadata) == written
    assert AttemptMetadata.extract({"attempt": 1, "unrelated": 5}).attempt == 1
