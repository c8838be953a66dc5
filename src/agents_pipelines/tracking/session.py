"""One MLflow run per workflow run: params, tags, metrics, the trace and the artifacts.

The run is created and ended through ``MlflowClient`` with explicit ids, never through the
fluent API's active run: that is kept per thread, and concurrent runs in one process (a
threaded executor, a notebook) linked their traces to each other's runs (9 of 16,
measured). The root span names the run and the experiment itself.

Process set-up is in client.py, the experiment cache in experiments.py, waiting for the
trace export in export.py; recorder.py turns a workflow run into one of these sessions.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agents_pipelines.redaction import redact, redact_value, redacting_logger
from agents_pipelines.telemetry import OtlpSignal
from agents_pipelines.tracking import (
    experiments,
    span_policy,
    span_release,
    stale_runs,
    trace_outcome,
)
from agents_pipelines.tracking.client import configured_client, run_tracer
from agents_pipelines.tracking.deadline import TrackingBudget, TrackingTimeoutError
from agents_pipelines.tracking.export import wait_for_trace
from agents_pipelines.tracking.tracking_settings import TrackingSettings
from agents_pipelines.usage import Pricer, UsageSummary, round_usd
from agents_pipelines.usage.cost_summary_json import JsonWithRows

logger = redacting_logger(__name__)


@dataclass(frozen=True)
class TrackingInfo:
    run_id: str
    experiment_id: str
    experiment_name: str
    trace_id: str | None
    run_url: str
    tracking_uri: str


class TrackingSession:
    """Start with ``TrackingSession.start``; trace with ``traced``; finish with ``end``.

    The MLflow calls the run waits on, at the start and at the end together, get at most
    ``config.timeout_s`` of waiting (see deadline.py): the workflow's own time between them
    does not count. With async_logging off, the trace id is reported only once MLflow has
    stored the trace.
    """

    def __init__(
        self, settings: TrackingSettings, experiment_id: str, run_id: str, budget: TrackingBudget
    ):
        self.settings = settings
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.trace_id: str | None = None
        self._budget = budget  # what is left of the run's time to wait on MLflow

    @classmethod
    def start(
        cls,
        settings: TrackingSettings,
        *,
        run_name: str | None,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> TrackingSession:
        import mlflow  # noqa: F401  (a first import takes seconds: not on the clock)

        budget = TrackingBudget(settings.config.timeout_s)
        experiment_id, run_id = budget.call(
            f"creating the run at {settings.tracking_uri}",
            lambda: _create_run(settings, run_name, dict(tags), params),
            # A run created after the run stopped waiting would stay RUNNING forever.
            if_late=lambda created: configured_client(settings.tracking_uri).set_terminated(
                created[1], "KILLED"
            ),
        )
        return cls(settings, experiment_id, run_id, budget)

    @contextmanager
    def traced(
        self,
        name: str,
        inputs: Mapping[str, Any],
        pricer: Pricer,
        usage: Callable[[], UsageSummary],
        otlp: OtlpSignal | None = None,
    ) -> Iterator[tuple[Any, ...]]:
        """A root span around the graph; yields the LangChain callbacks that trace the run
        (MLflow's tracer, client.run_tracer): pass them in the graph's config, and its
        node and LLM spans nest below the root span.

        With ``otlp``, the trace's spans also go to that OpenTelemetry collector, and are
        sent as the root span closes (telemetry/span_export.py).

        Each LLM span gets its cost from ``pricer`` (see span_policy). Before the root span
        closes, the trace's total cost is set from ``usage()``, the sum of those same span
        costs: MLflow's SQL store would otherwise recompute it from whichever span batch
        the async exporter delivers last.
        """
        import mlflow
        from mlflow.entities import MlflowExperimentLocation

        full = self.settings.config.artifact_level == "full"
        routed: int | None = None
        try:
            with mlflow.start_span(
                name=name,
                span_type="CHAIN",
                run_id=self.run_id,
                trace_destination=MlflowExperimentLocation(self.experiment_id),
            ) as root:
                self.trace_id = root.trace_id
                self._link_trace(root.trace_id)
                routed = _route_to_collector(root, otlp)
                pii = self.settings.config.pii()
                span_policy.apply_to(root.trace_id, span_policy.TracePolicy(pricer, full, pii))
                if trace_outcome.install():  # stored spans leave memory (span_release)
                    span_release.track(root.trace_id)
                if not self.settings.config.async_logging:
                    trace_outcome.watch(root.trace_id)
                root.set_inputs(dict(inputs) if full else {"inputs": sorted(inputs)})
                try:
                    yield (run_tracer(keep_content=full),)
                finally:
                    span_release.close(root.trace_id)
                    _set_trace_cost(usage())
        finally:
            # After the root span ends, so the policy applies to the root span too.
            if self.trace_id is not None:
                span_policy.forget(self.trace_id)
            if routed is not None:
                from agents_pipelines.telemetry import span_export

                span_export.end_route(routed)

    def _link_trace(self, trace_id: str) -> None:
        """Tag the run with its trace (stale_runs), within the run's tracking deadline."""
        import mlflow

        # Not configured_client(): re-pointing MLflow's process-wide state mid-trace would
        # replace the exporter that this trace's spans go to.
        client = mlflow.MlflowClient(self.settings.tracking_uri)
        try:
            self._budget.call(
                f"tagging the run with its trace at {self.settings.tracking_uri}",
                lambda: stale_runs.link_trace(client, self.run_id, trace_id),
            )
        except TrackingTimeoutError as exc:  # the end of the run meets the same deadline
            logger.warning("%s", exc)

    def info(self) -> TrackingInfo:
        return TrackingInfo(
            self.run_id,
            self.experiment_id,
            self.settings.experiment_name,
            self.trace_id,
            self.settings.run_url(self.experiment_id, self.run_id),
            self.settings.tracking_uri,
        )

    def end(self, metrics: Mapping[str, float], artifacts: Mapping[str, Any], status: str) -> None:
        """Log metrics and artifacts, wait for the trace (async_logging off), end the run.

        One call each: a metrics batch, one upload of every artifact, the status. Every step
        is tried even when one fails; the first error is raised, later ones noted on it, as
        the first is usually the cause (a server gone, the rest fall with it).
        """
        trace_id = self.trace_id
        if not self.settings.config.async_logging:
            self.trace_id = None  # named again once MLflow has stored the trace
        self._budget.call(
            f"ending run {self.run_id} at {self.settings.tracking_uri}",
            lambda: self._end(metrics, artifacts, status, trace_id),
        )

    def _end(
        self,
        metrics: Mapping[str, float],
        artifacts: Mapping[str, Any],
        status: str,
        trace_id: str | None,
    ) -> None:
        client = configured_client(self.settings.tracking_uri)
        errors = _attempt([], lambda: self._log_results(client, metrics, artifacts))
        if not self.settings.config.async_logging and trace_id is not None:
            errors = _attempt(errors, lambda: self._confirm_trace_stored(trace_id))
        if errors and self.settings.config.required:
            status = "FAILED"  # the run will fail over it
        errors = _attempt(errors, lambda: client.set_terminated(self.run_id, status))
        if errors:
            first, *later = errors
            for error in later:
                first.add_note(f"Then: {type(error).__name__}: {error}")
            raise first

    def _log_results(
        self, client: Any, metrics: Mapping[str, float], artifacts: Mapping[str, Any]
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
        )
        if artifacts:
            with tempfile.TemporaryDirectory(prefix="agents-pipelines-") as folder:
                for path, content in artifacts.items():
                    _write_artifact(Path(folder, path), content)
                client.log_artifacts(self.run_id, folder)

    def _confirm_trace_stored(self, trace_id: str) -> None:
        """Wait for the trace; name it again once MLflow has stored it."""
        result = wait_for_trace(self.settings.tracking_uri, trace_id)
        if result.stored:
            self.trace_id = trace_id
        if result.error is not None or not result.stored:
            part = "only in part" if result.stored else "not at all"
            cause = result.error or "it never reached the store"
            raise TraceNotStoredError(f"MLflow stored trace {trace_id} {part}: {cause}")


class TraceNotStoredError(Exception):
    """MLflow's exporter failed to store a trace (it only logs such failures)."""


def _attempt(errors: list[Exception], step: Callable[[], None]) -> list[Exception]:
    try:
        step()
    except Exception as exc:
        return [*errors, exc]
    return errors


def _create_run(
    settings: TrackingSettings,
    run_name: str | None,
    tags: dict[str, str],
    params: Mapping[str, Any],
) -> tuple[str, str]:
    """The experiment (made if missing) and a new run in it, with ``params`` logged."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    client = configured_client(settings.tracking_uri)
    # Said here, once per run: configured_client() runs again when the run ends.
    logger.info("✓ MLflow tracing enabled (MLflow's LangChain tracer, in the run's callbacks)")
    # Tags are ids (Dagster's run id, asset key, partition): a run of digits in an id
    # must not be read as a phone number, so redact_pii masks the params only.
    tags, params = redact_value(dict(tags), keys_only=True), redact_value(dict(params))
    key = (settings.tracking_uri, settings.experiment_name)
    cached = experiments.is_cached(*key)
    experiment_id = experiments.experiment_id(client, *key)
    logger.info("✓ Experiment: %s (ID: %s)", settings.experiment_name, experiment_id)
    if workflow := tags.get(stale_runs.WORKFLOW_TAG):
        stale_runs.close_dead_runs(client, settings.tracking_uri, experiment_id, workflow)
    tags = {**tags, **stale_runs.owner_tags()}
    try:
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    except MlflowException:
        if not cached:
            raise
        # The experiment may have been deleted and made anew since: look it up again.
        experiments.forget(*key)
        experiment_id = experiments.experiment_id(client, *key)
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return experiment_id, run_id


def _route_to_collector(root: Any, otlp: OtlpSignal | None) -> int | None:
    """Route the trace of ``root`` to ``otlp``; its OpenTelemetry trace id, or None."""
    from agents_pipelines._compat.mlflow import raw_span
    from agents_pipelines.telemetry import span_export

    if otlp is None:
        return None
    context = raw_span(root).get_span_context()
    if context is None or not context.trace_id:  # tracing is off: a no-op span
        return None
    span_export.route(context.trace_id, otlp)
    return int(context.trace_id)


def _write_artifact(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # json escapes a lone surrogate; plain text keeps it as the escape text.
    with path.open("w", encoding="utf-8", errors="backslashreplace") as file:
        if isinstance(content, JsonWithRows):  # cost_summary.json: a row per call
            _write_rows_json(file, content)
        elif path.name in _OUR_NUMBERS:
            file.write(_json(redact_value(content)))
        elif isinstance(content, str):
            file.write(redact(content))
        else:
            file.write(redact(json.dumps(content, indent=2, default=str)))


def _write_rows_json(file: TextIO, content: JsonWithRows) -> None:
    """``content`` as json.dump(indent=2) writes it, each row made, redacted (our numbers
    stay) and written in turn: a large map's summary is never held whole, as rows or as
    text."""
    file.write("{")
    for i, (key, value) in enumerate(content.head.items()):
        file.write(f"{',' if i else ''}\n  {json.dumps(key)}: ")
        if key != content.rows_key:
            file.write(_json(redact_value(value)).replace("\n", "\n  "))
            continue
        rows = 0
        file.write("[")
        for rows, row in enumerate(content.rows(), start=1):
            text = _json(redact_value(row)).replace("\n", "\n    ")
            file.write(f"{',' if rows > 1 else ''}\n    {text}")
        file.write("\n  ]" if rows else "]")
    file.write("\n}")


def _json(value: Any) -> str:
    # No raw line break inside a value's text (json escapes it), so indenting after each
    # line break nests the text. An object json cannot encode is written as its text.
    return json.dumps(value, indent=2, default=lambda o: redact(str(o)))


# Artifacts whose numbers are all ours (counts, costs, times): their strings are redacted,
# not the JSON text, so redact_pii's phone finder does not read each call's cost and
# latency (2 to 3.5 ms each in phonenumbers; 39 of 84 ms of masking per run of 11 calls).
# A user's state (inputs.json, outputs.json) may hold a number that is personal data, so
# the other artifacts are redacted as text.
_OUR_NUMBERS = frozenset({"cost_summary.json"})


def _set_trace_cost(summary: UsageSummary) -> None:
    import mlflow

    from agents_pipelines._compat.mlflow import TraceMetadataKey

    priced = [call.price for call in summary.calls if call.price is not None]
    if not priced:
        return
    cost = {
        "input_cost": round_usd(sum(p.input_usd for p in priced)),
        "output_cost": round_usd(sum(p.output_usd for p in priced)),
        "total_cost": summary.total_cost_usd,
    }
    mlflow.update_current_trace(metadata={TraceMetadataKey.COST: json.dumps(cost)})
