"""The one home of MLflow: run tracking, tracing, price table and trace costs."""

from agents_pipelines.tracking.pricing import MlflowPriceTable
from agents_pipelines.tracking.session import (
    TrackingInfo,
    TrackingSession,
    drain_trace_export,
    untraced,
    usage_metrics,
)
from agents_pipelines.tracking.settings import TrackingSettings, resolve_settings

__all__ = [
    "MlflowPriceTable",
    "TrackingInfo",
    "TrackingSession",
    "TrackingSettings",
    "drain_trace_export",
    "resolve_settings",
    "untraced",
    "usage_metrics",
]
