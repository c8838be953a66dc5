"""OpenTelemetry: each run's trace and GenAI metrics to a collector, beside MLflow.

``RunTelemetry.start(workflow, tags)`` resolves the run's collector (otlp_target.py); the
MLflow session routes the run's trace to it (span_export.py), and ``finish`` records the
run's metrics and sends them (genai_metrics.py). The GenAI attributes of each LLM span are
set by tracking/span_policy.py through genai_spans.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agents_pipelines.spec import Workflow
from agents_pipelines.telemetry.otlp_target import OtlpSignal, OtlpTarget, resolve_target
from agents_pipelines.usage import UsageSummary

__all__ = ["OtlpSignal", "OtlpTarget", "RunTelemetry", "resolve_target", "shutdown"]

PARTITION_TAG = "dagster.partition"  # orchestration/resource.py tags a partition's run so


@dataclass(frozen=True)
class RunTelemetry:
    """One run's OpenTelemetry export; ``target`` None: no collector, nothing sent."""

    target: OtlpTarget | None
    workflow: str
    partition: str | None

    @classmethod
    def start(cls, workflow: Workflow, tags: Mapping[str, str]) -> RunTelemetry:
        target = resolve_target(workflow.spec.config.observability.otlp)
        return cls(target, workflow.name, tags.get(PARTITION_TAG))

    @property
    def traces(self) -> OtlpSignal | None:
        return None if self.target is None else self.target.traces

    def finish(self, usage: UsageSummary) -> None:
        """Record the run's metrics and send them. A collector that is down is logged, never
        fails the run: the MLflow record and the asset's metadata hold the same figures."""
        if self.target is None or self.target.metrics is None:
            return
        from agents_pipelines.telemetry.genai_metrics import record_run

        try:
            record_run(self.target.metrics, self.workflow, self.partition, usage)
        except Exception as exc:  # an exporter's own errors are logged by OpenTelemetry
            from agents_pipelines.telemetry.genai_metrics import logger

            logger.warning("Could not send the run's metrics to OpenTelemetry: %s", exc)


def shutdown() -> None:
    """Send what is queued and stop every OTLP exporter of the process. Runs send their
    own telemetry as they end; this is for a process (or a test) that is done with its
    collectors, which would otherwise keep an idle exporter each."""
    from agents_pipelines.telemetry.genai_metrics import forget_meters
    from agents_pipelines.telemetry.span_export import forget_exporters

    forget_exporters()
    forget_meters()
