"""Every metadata key a workflow asset writes to Dagster, declared once, as typed sets.

A writer builds a set and adds ``as_metadata()`` to its event; a reader takes the figures
back with ``extract(event.metadata)``. Neither spells a key: a key written in one module
and read in another (an attempt's ``total_cost_usd``, read by the spend limits) cannot
drift apart, and a writer that sets a key no set declares fails at once, naming it.

The sets follow Dagster's ``NamespacedMetadataSet`` (``extract``, typed optional fields,
None for "not written"), which Dagster 1.13 does not export (it lives in
``dagster._core.definitions.metadata.metadata_set``): this base is ours, so no private
Dagster name is used, and the keys carry no namespace, as users have always seen them.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from typing import Any, Self, Union, get_args, get_origin

import dagster as dg
from pydantic import BaseModel, ConfigDict


class MetadataSet(BaseModel):
    """A set of metadata keys: one optional field per key. None fields are not written."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def as_metadata(self) -> dict[str, Any]:
        """The set's entries for a Dagster event, in the order of its fields."""
        return {
            name: _wrapped(value)
            for name in type(self).model_fields
            if (value := getattr(self, name)) is not None
        }

    @classmethod
    def keys(cls) -> frozenset[str]:
        return frozenset(cls.model_fields)

    @classmethod
    def extract(cls, metadata: Mapping[str, Any]) -> Self:
        """The set's entries of ``metadata`` (an event's), other keys ignored. A plain field
        gets the value inside its ``MetadataValue``; a ``MetadataValue`` field keeps it."""
        values = {}
        for name in cls.model_fields:
            if name in metadata:
                value = metadata[name]
                if isinstance(value, dg.MetadataValue) and name not in _wrapped_fields(cls):
                    value = value.value
                values[name] = value
        return cls(**values)


def _wrapped(value: Any) -> Any:
    """A plain value as the MetadataValue of its type: a float stays a float (``0.0`` is
    not shown as the int ``0``), and a bool is not taken for an int."""
    if isinstance(value, dg.MetadataValue):
        return value
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, float):
        return dg.MetadataValue.float(value)
    return dg.MetadataValue.text(str(value))


@functools.cache
def _wrapped_fields(cls: type[MetadataSet]) -> frozenset[str]:
    """The fields whose type is a MetadataValue (a table, a URL, Markdown)."""
    return frozenset(
        name
        for name, field in cls.model_fields.items()
        if any(_is_metadata_value(t) for t in _union_members(field.annotation))
    )


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _is_metadata_value(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dg.MetadataValue)


class UsageMetadata(MetadataSet):
    """Tokens, cost and calls: on a materialization and on a failure, so spend is never
    lost. The totals are ``UsageSummary.totals()``'s; an attempt that materialized is read
    back by its ``total_cost_usd`` (the spend limits)."""

    total_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    total_cost_usd: float | None = None
    llm_calls: int | None = None
    cache_hits: int | None = None
    saved_cost_usd: float | None = None
    eval_cost_usd: float | None = None
    eval_tokens: int | None = None
    node_calls: dg.TableMetadataValue | None = None
    failed_items: dg.TableMetadataValue | None = None  # map items written as the empty value
    resumed: dg.TableMetadataValue | None = None  # nodes reused from an earlier attempt
    resumed_cost_usd: float | None = None
    unpriced_models: str | None = None
    cancelled_calls: int | None = None  # in llm_calls, unpriced: a stop cut them short
    batch_jobs: dg.TableMetadataValue | None = None  # the Batch API jobs (llm.batch)
    saved_vs_interactive_usd: float | None = None  # batch calls against interactive prices


class RunMetadata(MetadataSet):
    """What a materialization shows beside its usage: the run, its MLflow links, notes."""

    node_count: int | None = None
    duration_s: float | None = None
    llm_backend: str | None = None
    output_preview: dg.MarkdownMetadataValue | None = None
    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_run_url: dg.UrlMetadataValue | None = None
    mlflow_trace_id: str | None = None  # None: MLflow did not store the trace
    resume: str | None = None
    cache_warning: str | None = None
    tracking_warning: str | None = None
    prompt_versions: dg.TableMetadataValue | None = None  # registry prompts, at their versions


class AttemptsMetadata(MetadataSet):
    """Every attempt of the step in this run, and their sum (all of them were paid for)."""

    attempts: dg.TableMetadataValue | None = None
    all_attempts_llm_calls: int | None = None
    all_attempts_total_tokens: int | None = None
    all_attempts_cost_usd: float | None = None


class AttemptMetadata(MetadataSet):
    """One attempt that did not materialize (retried, failed or stopped), on its
    AssetObservation: read back by later attempts and by the spend limits."""

    attempt: int | None = None
    outcome: str | None = None
    llm_calls: int | None = None
    total_tokens: int | None = None
    total_cost_usd: float | None = None
    error: str | None = None


class BudgetCheckMetadata(MetadataSet):
    """The budget check: the run against its budget, and each spend limit's window
    (``pool_`` for a pool's limit) with what was spent in it, its limit and its reset."""

    total_cost_usd: float | None = None
    total_tokens: int | None = None
    max_cost_usd: float | None = None
    max_total_tokens: int | None = None
    spent_this_day_usd: float | None = None
    spent_this_day_limit_usd: float | None = None
    spent_this_day_resets_at: str | None = None
    spent_this_month_usd: float | None = None
    spent_this_month_limit_usd: float | None = None
    spent_this_month_resets_at: str | None = None
    pool_spent_this_day_usd: float | None = None
    pool_spent_this_day_limit_usd: float | None = None
    pool_spent_this_day_resets_at: str | None = None
    pool_spent_this_month_usd: float | None = None
    pool_spent_this_month_limit_usd: float | None = None
    pool_spent_this_month_resets_at: str | None = None
    over: str | None = None


class OutputCheckMetadata(MetadataSet):
    """An output check (``orchestration.checks``): the field, its rule, what was measured."""

    field: str | None = None
    rule: str | None = None
    measured: bool | int | float | str | None = None  # the value, or its length


class EvalCheckMetadata(MetadataSet):
    """An eval's check: its verdict and rationale and, for a judge, its model and cost."""

    verdict: str | None = None  # "pass" or "fail"
    rationale: str | None = None
    kind: str | None = None  # "judge" or "rule"
    judge_model: str | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    error: str | None = None


class RangeMetadata(MetadataSet):
    """A run over several partitions (``orchestration.backfill``): on its failure, each
    partition's outcome and spend; on a check, the partitions it failed for."""

    partitions: dg.TableMetadataValue | None = None
    failed_partitions: str | None = None
    checked_partitions: int | None = None
