"""Rules that span sections of a workflow: they run after the models validate.

All rules run, so a file with five problems reports five. Each finding's fix is a text,
or a Hint whose did-you-mean search only the first MAX_HINTS findings get.
"""

from __future__ import annotations

from agents_pipelines.spec import (
    batch_rules,
    choice_rules,
    eval_rules,
    graph_rules,
    map_rules,
    orchestration_rules,
    partition_rules,
    python_rules,
    state_rules,
)
from agents_pipelines.spec.findings import MAX_HINTS, Path
from agents_pipelines.spec.models import WorkflowSpec


def run_checks(spec: WorkflowSpec) -> list[tuple[Path, str, str]]:
    checks = (
        state_rules.state_fields,
        choice_rules.choice_fields,
        graph_rules.node_ids_and_outputs,
        state_rules.prompt_placeholders,
        map_rules.map_nodes,
        batch_rules.batch_nodes,
        graph_rules.edges_and_routes,
        state_rules.input_values,
        orchestration_rules.orchestration_settings,
        partition_rules.time_partitions,
        orchestration_rules.tracking_uri,
        python_rules.python_refs,
        eval_rules.evals,
    )
    findings = [finding for check in checks for finding in check(spec)]
    if not any(path[0] == "edges" for path, _, _ in findings):
        # Reachability only means something once every edge names a real node.
        findings += graph_rules.reachability(spec)
    return [
        (path, problem, fix if isinstance(fix, str) else fix.text(search=i < MAX_HINTS))
        for i, (path, problem, fix) in enumerate(findings)
    ]
