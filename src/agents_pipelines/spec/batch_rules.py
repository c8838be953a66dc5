"""Rules on Gemini Batch Mode (``llm.batch``): a batch job answers each request once, so
only single-turn calls can be batched."""

from __future__ import annotations

from collections.abc import Iterator

from agents_pipelines.spec.findings import Finding
from agents_pipelines.spec.models import WorkflowSpec


def batch_nodes(spec: WorkflowSpec) -> Iterator[Finding]:
    for i, node in enumerate(spec.nodes):
        if not node.calls_llm or not node.tools:
            continue
        if spec.config.llm.merged(node.llm).batch_mode is None:
            continue
        from_config = node.llm is None or node.llm.batch is None
        yield (
            ("nodes", i, "tools"),
            f"node `{node.id}` has `tools` and runs in batch mode"
            + (" (config.llm.batch)" if from_config else "")
            + ": a tool loop takes several turns, and a batch job answers each request once",
            "set `llm: {batch: false}` on this node to call it interactively"
            if from_config
            else "drop `batch` from the node's `llm`, or drop its `tools`",
        )


def has_batch_calls(spec: WorkflowSpec) -> bool:
    """Whether any node of the workflow calls Gemini in batch mode."""
    return any(
        node.calls_llm and spec.config.llm.merged(node.llm).batch_mode is not None
        for node in spec.nodes
    )
