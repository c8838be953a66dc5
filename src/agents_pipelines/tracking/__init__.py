"""The one home of MLflow: run tracking, tracing, price table and trace costs."""

from agents_pipelines.tracking.client import untraced
from agents_pipelines.tracking.export import drain_trace_export
from agents_pipelines.tracking.pricing import MlflowPriceTable
from agents_pipelines.tracking.recorder import RunOutcome, RunRecorder, TrackingFailedWarning
from agents_pipelines.tracking.session import TrackingInfo, TrackingSession
from agents_pipelines.tracking.tracking_settings import TrackingSettings, resolve_settings

__all__ = [
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
]
