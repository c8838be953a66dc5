"""An overall deadline for the MLflow calls a run waits on.

MLflow's HTTP client cannot be interrupted. A tracking server that accepts connections but
never answers holds each call for MLFLOW_HTTP_REQUEST_TIMEOUT × (retries + 1): about 2
minutes per call with the caps in settings.py, and a run makes several calls. So the calls
run on a worker thread, and the run stops waiting for them when the deadline passes.

The deadline is a budget of waiting (``TrackingBudget``): only the time a run spends
waiting on MLflow counts, never the workflow between its calls. A clock started with the
run recorded a 65 s run as timed out, and left its MLflow run RUNNING.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)


class TrackingTimeoutError(TimeoutError):
    """MLflow did not answer within observability.mlflow.timeout_s."""


class _Call(Generic[T]):
    """One call on a daemon thread; a daemon, so an abandoned call never holds up exit."""

    def __init__(self, call: Callable[[], T], if_late: Callable[[T], None] | None):
        self._call = call
        self._if_late = if_late
        self._lock = threading.Lock()
        self._abandoned = False
        self.result: T | None = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()
        self.thread = threading.Thread(
            target=context.run, args=(self._run,), name="agents-pipelines-mlflow", daemon=True
        )

    def _run(self) -> None:
        try:
            result = self._call()
        except BaseException as exc:  # handed to the waiting thread
            self.error = exc
            return
        with self._lock:
            self.result = result
            late = self._abandoned
        if late and self._if_late is not None:
            try:
                self._if_late(result)
            except Exception as exc:  # nobody waits for this thread any more
                logger.warning("Could not undo a late MLflow call: %s", exc)

    def abandon(self) -> bool:
        """Stop waiting; False if the call finished meanwhile."""
        with self._lock:
            if self.thread.is_alive():
                self._abandoned = True
        return self._abandoned


def call_within(
    seconds: float,
    limit_s: float,
    what: str,
    call: Callable[[], T],
    if_late: Callable[[T], None] | None = None,
) -> T:
    """``call()``, or TrackingTimeoutError once ``seconds`` (what is left of the run's
    ``limit_s``) have passed.

    An abandoned call goes on in the background; ``if_late`` gets its result if it
    finishes after all, to undo what the run no longer expects (a run left RUNNING).
    """
    worker = _Call(call, if_late)
    worker.thread.start()
    worker.thread.join(max(seconds, 0.0))
    if worker.thread.is_alive() and worker.abandon():
        raise TrackingTimeoutError(
            f"MLflow did not finish {what} within observability.mlflow.timeout_s "
            f"({limit_s:g} s for all of a run's MLflow calls); the run stopped waiting for it. "
            "Check that the tracking server answers, or raise timeout_s"
        )
    worker.thread.join()
    if worker.error is not None:
        raise worker.error
    return worker.result  # type: ignore[return-value]


class TrackingBudget:
    """The seconds a run may wait on MLflow, ``limit_s`` in all, spent only while it waits:
    a run that computes for an hour between its first and its last MLflow call still has
    what its first call left."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self._spent_s = 0.0
        self._lock = threading.Lock()

    def call(
        self, what: str, call: Callable[[], T], if_late: Callable[[T], None] | None = None
    ) -> T:
        """``call()`` within what is left of the budget (``call_within``)."""
        with self._lock:
            left_s = self.limit_s - self._spent_s
        started = time.monotonic()
        try:
            return call_within(left_s, self.limit_s, what, call, if_late)
        finally:
            with self._lock:
                self._spent_s += time.monotonic() - started
