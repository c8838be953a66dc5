"""Deployment settings: every environment variable agents_pipelines reads, in one typed class.

Workflow files never read the environment (spec/ is pure pydantic); keys, the tracking
server and the backend come from here. ``settings()`` parses the environment once and
returns the same object until one of these variables changes: a test's monkeypatched
variable, or a key rotated in ``os.environ`` by a notebook, takes effect on the next call
without anyone having to remember to clear a cache. ``settings.cache_clear()`` forgets the
parsed values outright.
"""

from __future__ import annotations

import functools
import os
import typing
from typing import Any, Literal

from pydantic import AliasChoices, Field, PositiveFloat, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from agents_pipelines.errors import AgentsPipelinesError

BACKEND_ENV = "AGENTS_PIPELINES_LLM_BACKEND"
LATENCY_ENV = "AGENTS_PIPELINES_SIMULATED_LATENCY_S"
CASSETTE_ENV = "AGENTS_PIPELINES_CASSETTE"
WORKFLOWS_DIR_ENV = "AGENTS_PIPELINES_WORKFLOWS_DIR"
ON_INVALID_ENV = "AGENTS_PIPELINES_INVALID_WORKFLOWS"
EXECUTOR_ENV = "AGENTS_PIPELINES_EXECUTOR"
CELERY_CONFIG_ENV = "AGENTS_PIPELINES_CELERY_CONFIG"
UI_URL_ENV = "AGENTS_PIPELINES_MLFLOW_UI_URL"
API_KEY_ENV = "GOOGLE_API_KEY"
ALT_API_KEY_ENV = "GEMINI_API_KEY"
BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
POOL_SPEND_LIMITS_ENV = "AGENTS_PIPELINES_POOL_SPEND_LIMITS"
# OpenTelemetry's standard exporter variables (telemetry/): where each run's trace and
# metrics go, and over which protocol. The exporters read the rest themselves (headers,
# timeout, compression, certificates).
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTLP_METRICS_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTLP_TEMPORALITY_ENV = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
OtlpProtocol = Literal["http/protobuf", "grpc"]

CHECKPOINT_KEY_ENV = "AGENTS_PIPELINES_CHECKPOINT_KEY"

# A pool's spend limits: USD per calendar day and/or month (UTC), by pool name.
PoolSpendLimits = dict[str, dict[Literal["day", "month"], PositiveFloat]]

_CHOICES = (
    "llm_backend",
    "invalid_workflows",
    "executor",
    "otlp_protocol",
    "otlp_traces_protocol",
    "otlp_metrics_protocol",
    "otlp_metrics_temporality",
    "otel_traces_exporter",
    "otel_metrics_exporter",
)


class Settings(BaseSettings):
    """One field per variable; an empty variable counts as unset, as it always has."""

    model_config = SettingsConfigDict(case_sensitive=True, frozen=True, env_ignore_empty=True)

    llm_backend: Literal["gemini", "simulated", "record", "replay"] | None = Field(
        None, alias=BACKEND_ENV
    )
    # The JSON-lines file that the record backend appends to and the replay backend serves.
    cassette: str | None = Field(None, alias=CASSETTE_ENV)
    simulated_latency_s: float = Field(0.0, ge=0, alias=LATENCY_ENV)
    workflows_dir: str = Field("workflows", alias=WORKFLOWS_DIR_ENV)
    invalid_workflows: Literal["fail", "skip"] = Field("fail", alias=ON_INVALID_ENV)
    executor: Literal["in_process", "multiprocess", "celery"] = Field(
        "in_process", alias=EXECUTOR_ENV
    )
    # The Celery workers' config YAML (deploy/celery/celery.yaml): one file for both sides.
    celery_config: str | None = Field(None, alias=CELERY_CONFIG_ENV)
    mlflow_ui_url: str | None = Field(None, alias=UI_URL_ENV)
    mlflow_tracking_uri: str | None = Field(None, alias=TRACKING_URI_ENV)
    gemini_base_url: str | None = Field(None, alias=BASE_URL_ENV)
    # JSON, e.g. {"gemini": {"day": 20, "month": 300}}
    pool_spend_limits: PoolSpendLimits = Field(default_factory=dict, alias=POOL_SPEND_LIMITS_ENV)
    otlp_endpoint: str | None = Field(None, alias=OTLP_ENDPOINT_ENV)
    otlp_traces_endpoint: str | None = Field(None, alias=OTLP_TRACES_ENDPOINT_ENV)
    otlp_metrics_endpoint: str | None = Field(None, alias=OTLP_METRICS_ENDPOINT_ENV)
    otlp_protocol: OtlpProtocol | None = Field(None, alias="OTEL_EXPORTER_OTLP_PROTOCOL")
    otlp_traces_protocol: OtlpProtocol | None = Field(
        None, alias="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    )
    otlp_metrics_protocol: OtlpProtocol | None = Field(
        None, alias="OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
    )
    otlp_metrics_temporality: Literal["cumulative", "delta", "lowmemory"] | None = Field(
        None, alias=OTLP_TEMPORALITY_ENV
    )
    # "none" turns a signal off, as for any OpenTelemetry SDK; anything else means OTLP.
    otel_traces_exporter: str | None = Field(None, alias="OTEL_TRACES_EXPORTER")
    otel_metrics_exporter: str | None = Field(None, alias="OTEL_METRICS_EXPORTER")

    # The AES key (base64) of the checkpoints of workflows with redact_pii.
    checkpoint_key: SecretStr | None = Field(None, alias=CHECKPOINT_KEY_ENV)
    # GOOGLE_API_KEY wins over GEMINI_API_KEY, as the Gemini SDK orders them.
    api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices(API_KEY_ENV, ALT_API_KEY_ENV)
    )

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _normalize_choice(cls, value: Any) -> Any:
        """`Simulated ` means simulated: people type these by hand."""
        return value.strip().lower() if isinstance(value, str) else value


def _env_names() -> tuple[str, ...]:
    names: list[str] = []
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names += [str(choice) for choice in field.validation_alias.choices]
        elif field.alias:
            names.append(field.alias)
    return tuple(names)


_ENV_NAMES = _env_names()


def settings() -> Settings:
    """The settings of the current environment, parsed once per distinct set of values.

    Raises AgentsPipelinesError that names each bad variable, what it holds and what it allows.
    """
    return _parse(tuple(os.environ.get(name) for name in _ENV_NAMES))


# Module-level, not in the registry: keyed by the environment's values, so never stale.
@functools.lru_cache(maxsize=8)
def _parse(values: tuple[str | None, ...]) -> Settings:
    """``values`` is only the cache key: BaseSettings reads the environment itself."""
    try:
        return Settings()
    except ValidationError as exc:
        raise AgentsPipelinesError(
            "Invalid environment: " + "; ".join(_describe(e) for e in exc.errors())
        ) from None
    except SettingsError:  # pydantic-settings could not decode a JSON variable
        raise AgentsPipelinesError(
            f"Invalid environment: {POOL_SPEND_LIMITS_ENV}="
            f"{os.environ.get(POOL_SPEND_LIMITS_ENV)!r} is not valid JSON. Fix: write e.g. "
            '{"gemini": {"day": 20, "month": 300}}'
        ) from None


settings.cache_clear = _parse.cache_clear  # type: ignore[attr-defined]


def _describe(error: Any) -> str:
    """``AGENTS_PIPELINES_EXECUTOR='dask' is not valid: it must be one of in_process, ...``"""
    name = str(error["loc"][0]) if error["loc"] else "?"
    hidden = (API_KEY_ENV, ALT_API_KEY_ENV, CHECKPOINT_KEY_ENV)
    shown = "<hidden>" if name in hidden else repr(error["input"])
    field = next((f for f in Settings.model_fields.values() if f.alias == name), None)
    allowed = _allowed(field.annotation) if field is not None else ()
    if name == POOL_SPEND_LIMITS_ENV:
        where = ".".join(str(part) for part in error["loc"][1:] if part != "[key]")
        return (
            f"{name} is not valid at {where or 'the top'}: {error['msg'].lower()} "
            f"(got {error['input']!r}). It maps pool names to their limits in USD per "
            'day and/or month, e.g. {"gemini": {"day": 20, "month": 300}}'
        )
    if allowed:
        fix = f"it must be one of {', '.join(allowed)}, or unset for the default"
    else:
        fix = error["msg"][0].lower() + error["msg"][1:]
    return f"{name}={shown} is not valid: {fix}"


def _allowed(annotation: Any) -> tuple[str, ...]:
    """The values a Literal (or Literal | None) field accepts."""
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is Literal:
            return tuple(str(choice) for choice in typing.get_args(arg))
    return ()
