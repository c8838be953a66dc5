"""The public surface, as httpx tests its own: each package exports exactly these names,
and every exported name imports (the lazy ones too)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PUBLIC_API = {
    "agents_pipelines": [
        "AgentsPipelinesError",
        "InvalidInputsError",
        "RunResult",
        "Workflow",
        "WorkflowConfigError",
        "WorkflowRunError",
        "WorkflowSpec",
        "WorkflowsComponent",
        "load_workflow",
        "run_workflow",
    ],
    "agents_pipelines._compat": [],  # private: agents_pipelines' own hooks into upstream
    "agents_pipelines.dataset_eval": ["EvalReport", "evaluate_dataset", "read_dataset"],
    "agents_pipelines.state_evals": ["Verdict", "evaluate"],
    "agents_pipelines.graph": ["build_graph", "initial_state"],
    "agents_pipelines.llm": [
        "BACKEND_ENV",
        "CASSETTE_ENV",
        "Backend",
        "ChatModelFactory",
        "chat_model_factory",
        "check_backend",
        "resolve_backend",
    ],
    "agents_pipelines.orchestration": [
        "WorkflowIOManager",
        "WorkflowRunner",
        "WorkflowTranslator",
        "WorkflowsComponent",
        "build_definitions",
        "build_workflow_asset",
        "build_workflow_assets",
        "build_workflow_definitions",
        "definitions_from_env",
        "run_config_schema",
    ],
    "agents_pipelines.spec": [
        "END",
        "START",
        "Workflow",
        "WorkflowSpec",
        "draw_mermaid",
        "load_workflow",
        "load_workflow_text",
        "load_workflows",
        "workflow_files",
        "workflow_json_schema",
    ],
    "agents_pipelines.testing": [
        "BatchRecord",
        "BatchScript",
        "Fault",
        "GeminiLoopbackServer",
        "MetricPoint",
        "OtlpLoopbackReceiver",
        "ReceivedSpan",
        "RecordedRequest",
        "Reply",
        "Usage",
    ],
    "agents_pipelines.redaction": [
        "GOOGLE_KEY",
        "REDACTED_KEY",
        "RedactingFilter",
        "masking",
        "redact",
        "redact_exception",
        "redact_value",
        "redacting_logger",
    ],
    "agents_pipelines.telemetry": [
        "OtlpSignal",
        "OtlpTarget",
        "RunTelemetry",
        "resolve_target",
        "shutdown",
    ],
    "agents_pipelines.tracking": [
        "MlflowPriceTable",
        "RunOutcome",
        "RunRecorder",
        "TrackingFailedWarning",
        "TrackingInfo",
        "TrackingSession",
        "TrackingSettings",
        "drain_trace_export",
        "resolve_settings",
        "untraced",
    ],
    "agents_pipelines.usage": [
        "SERVICE_TIERS",
        "STANDARD",
        "Budget",
        "CallRecord",
        "ItemFailure",
        "Price",
        "Pricer",
        "ResumedNode",
        "ServiceTier",
        "SpendLimit",
        "SpendLimits",
        "TokenUsage",
        "UsageLedger",
        "UsageSummary",
        "WindowSpend",
        "cost_summary",
        "round_usd",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_all_is_exactly_the_public_api(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == PUBLIC_API[module_name]


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_every_exported_name_imports_and_is_listed_by_dir(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{module_name}.{name}"
    # `dg` finds components by scanning dir(): the lazily imported names must be there too.
    assert set(module.__all__) <= set(dir(module))


def test_every_subpackage_is_covered() -> None:
    import agents_pipelines

    root = Path(agents_pipelines.__file__).parent
    subpackages = {f"agents_pipelines.{init.parent.name}" for init in root.glob("*/__init__.py")}
    assert subpackages | {"agents_pipelines"} == set(PUBLIC_API)
