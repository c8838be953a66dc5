"""MLflow faults a run must survive or report: a trace the store refuses or cannot encode,
a tracking server that never answers, and several tracking errors in one run.

The real MLflow client talks to a loopback proxy in front of a real `mlflow server`; the
proxy passes each request on, answers it with a 500, or never answers, as a test decides.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pytest
from mlflow import MlflowClient

from agents_pipelines.errors import WorkflowRunError
from agents_pipelines.orchestration.metadata import run_metadata
from agents_pipelines.runner import TrackingFailedWarning, run_workflow
from agents_pipelines.spec import load_workflow
from agents_pipelines.tracking import drain_trace_export
from conftest import LINEAR, write
from test_tracking_servers import _free_port

# On `make pytest`'s two workers, this module's tests run together on one worker, as in a
# serial run: its in-process server (below) sets MLflow's server variables for as long as
# the module runs.
pytestmark = pytest.mark.xdist_group("tracking_faults")

Action = Literal["pass", "fail", "hang"]
Rule = Callable[[str, str], Action]  # (method, path) -> what the proxy does
_HOP_BY_HOP = {"connection", "transfer-encoding", "content-length", "keep-alive"}


class FaultyProxy:
    """A loopback HTTP server in front of ``upstream`` that applies ``rule`` per request."""

    def __init__(self, upstream: str | None, rule: Rule):
        self.rule = rule
        self.upstream = urlsplit(upstream) if upstream else None
        self.released = threading.Event()  # set on close: hung requests end unanswered
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = proxy.rule(self.command, self.path)
                if action == "hang":
                    proxy.released.wait()
                    self.close_connection = True
                elif action == "fail":
                    self._reply(500, json.dumps(_injected(self.path)).encode(), {})
                else:
                    self._reply(*proxy.forward(self.command, self.path, dict(self.headers), body))

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        assert self.upstream is not None and self.upstream.port is not None
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port)
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            connection.close()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def _injected(path: str) -> dict[str, str]:
    return {"error_code": "INTERNAL_ERROR", "message": f"injected fault on {path}"}


@pytest.fixture(scope="module")
def tracking_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Path
) -> Iterator[str]:
    """MLflow's own server app, as `mlflow server` runs it (uvicorn), served in this process.

    A `mlflow server` subprocess re-imports MLflow, which takes minutes on a loaded
    machine. The server reads its stores from these variables once, so one per module.
    """
    import uvicorn

    folder = tmp_path_factory.mktemp("faults-server")
    shutil.copy(migrated_mlflow_db, folder / "server.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("_MLFLOW_SERVER_FILE_STORE", f"sqlite:///{folder / 'server.db'}")
        patch.setenv("_MLFLOW_SERVER_SERVE_ARTIFACTS", "true")
        patch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", "mlflow-artifacts:/")
        patch.setenv("_MLFLOW_SERVER_ARTIFACT_DESTINATION", str(folder / "artifacts"))
        with warnings.catch_warnings():  # MLflow's import, not ours
            warnings.simplefilter("ignore")
            from mlflow.server.fastapi_app import app

        _open_server_stores()
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(30)


def _open_server_stores() -> None:
    """Open the server's stores before it serves, and keep its URIs out of the client.

    On its first request the server opens its stores and sets them as the process's
    tracking and registry URIs (MLflow's ``handlers._get_tracking_store``). Sharing the
    process, a run's trace then went straight to the server's database, around the
    proxy, in 1 test run of 3: the store never refused it.
    """
    from mlflow.server import handlers
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_uris = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {
        name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    handlers._get_tracking_store()
    handlers._get_model_registry_store()
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved_uris
    for name, value in saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    # The server's set_tracking_uri reset MLflow's tracer: the next span makes a new one,
    # for the URI the client has then.


@pytest.fixture
def proxy_to(
    tmp_path: Path, simulated: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str | None, Rule], str]]:
    """Starts proxies and points MLFLOW_TRACKING_URI at the latest; closes them after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a 500 fails at once
    proxies: list[FaultyProxy] = []

    def start(upstream: str | None, rule: Rule) -> str:
        proxies.append(FaultyProxy(upstream, rule))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxies[-1].url)
        return proxies[-1].url

    yield start
    # A trace still queued for export goes to its proxy after the test. Once the proxy is
    # closed, MLflow retries it with back-off when the next test in this process sets its
    # tracking URI (that flushes the queue): 89 s in one CI run, which failed the next two
    # tests. So the queue is emptied here, each export failing at once: proxies closed (a
    # hung request ends unanswered), no retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    for proxy in proxies:
        proxy.close()
    drain_trace_export()


def workflow(tmp_path: Path, mlflow_block: str, name: str = "wf.yaml") -> Path:
    return write(
        tmp_path, LINEAR + f"config:\n  observability:\n    mlflow: {{{mlflow_block}}}\n", name
    )


def test_lone_surrogate_input_is_stored_escaped(
    tmp_path: Path, tracking_server: str, proxy_to: Callable[[str | None, Rule], str]
) -> None:
    proxy_to(tracking_server, lambda method, path: "pass")
    path = workflow(tmp_path, "artifact_level: full, async_logging: false, required: true")
    result = run_workflow(load_workflow(path), {"topic": "cats \ud800"})
    assert result.warnings == () and result.tracking is not None
    assert result.tracking.trace_id is not None
    client = MlflowClient(tracking_server)
    trace = client.get_trace(result.tracking.trace_id)
    root = next(span for span in trace.data.spans if span.parent_id is None)
    assert root.inputs["topic"] == "cats \\ud800"  # the escape, as text
    llm = next(span for span in trace.data.spans if span.span_type == "CHAT_MODEL")
    assert llm.inputs["messages"][0]["content"] == "Summarize cats \\ud800."
    folder = Path(client.download_artifacts(result.tracking.run_id, ""))
    assert json.loads((folder / "inputs.json").read_text())["topic"] == "cats \ud800"


def _refuse_traces(method: str, path: str) -> Action:
    return "fail" if "traces" in path else "pass"  # the trace API and OTLP span export


def test_a_trace_the_store_refuses_is_reported(
    tmp_path: Path, tracking_server: str, proxy_to: Callable[[str | None, Rule], str]
) -> None:
    proxy_to(tracking_server, _refuse_traces)
    with pytest.warns(TrackingFailedWarning, match="TraceNotStoredError"):
        result = run_workflow(load_workflow(workflow(tmp_path, "async_logging: false")))
    assert result.tracking is not None
    (warning,) = result.warnings
    stored = re.search(r"MLflow stored trace (tr-\w+) (only in part|not at all)", warning)
    assert stored is not None, warning
    assert "traces" in warning  # the refused call: the trace API or the trace's artifact
    # A trace id is named only when the store holds that trace (at least its summary).
    partly = stored.group(2) == "only in part"
    assert result.tracking.trace_id == (stored.group(1) if partly else None)
    metadata = run_metadata(result)
    assert ("mlflow_trace_id" in metadata) == partly
    assert metadata["tracking_warning"].value == warning
    assert MlflowClient(tracking_server).get_run(result.tracking.run_id).info.status == "FINISHED"

    required = workflow(tmp_path, "async_logging: false, required: true", "required.yaml")
    with pytest.raises(
        WorkflowRunError, match=r"TraceNotStoredError: MLflow stored trace tr-"
    ) as failed:
        run_workflow(load_workflow(required))
    assert failed.value.usage is not None and failed.value.usage.llm_calls == 1
    runs = MlflowClient(tracking_server).search_runs(
        [_experiment_id(tracking_server, "linear")],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].info.status == "FAILED"


def _experiment_id(uri: str, name: str) -> str:
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    assert experiment is not None
    return str(experiment.experiment_id)


def test_the_first_tracking_error_is_shown_first(
    tmp_path: Path, tracking_server: str, proxy_to: Callable[[str | None, Rule], str]
) -> None:
    batches = itertools.count()

    def fail_midway(method: str, path: str) -> Action:
        # The params batch at the start passes; the metrics batch at the end fails, and
        # so does runs/get, which MlflowClient.set_terminated calls to print the run's URL.
        if path.endswith("runs/log-batch"):
            return "fail" if next(batches) > 0 else "pass"
        return "fail" if "runs/get" in path else "pass"

    proxy_to(tracking_server, fail_midway)
    with pytest.warns(TrackingFailedWarning):
        result = run_workflow(load_workflow(workflow(tmp_path, "")))
    (warning,) = result.warnings
    assert "MlflowException: API request to " in warning and "runs/log-batch" in warning
    assert warning.index("runs/log-batch") < warning.index("runs/get")


def _hang(method: str, path: str) -> Action:
    return "hang"


def test_a_hung_tracking_server_does_not_stall_the_run(
    tmp_path: Path,
    proxy_to: Callable[[str | None, Rule], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Accepts connections and never answers. With the HTTP caps alone (30 s time-out,
    3 retries) each MLflow call would hold the run about 2 minutes."""
    proxy_to(None, _hang)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    started = time.monotonic()
    with pytest.warns(TrackingFailedWarning, match="TrackingTimeoutError"):
        result = run_workflow(
            load_workflow(workflow(tmp_path, "timeout_s: 2")), simulated_latency_s=4.0
        )
    elapsed = time.monotonic() - started
    assert result.state["summary"] and result.usage.llm_calls == 1
    assert result.tracking is None
    assert "observability.mlflow.timeout_s (2 s" in result.warnings[0]
    assert elapsed < 40, elapsed  # 4 s of LLM call, 2 s of waiting; minutes before

    required = workflow(tmp_path, "timeout_s: 2, required: true", "required.yaml")
    started = time.monotonic()
    with pytest.raises(WorkflowRunError, match="TrackingTimeoutError: MLflow did not"):
        run_workflow(load_workflow(required), simulated_latency_s=4.0)
    assert time.monotonic() - started < 30


def _hang_the_end(method: str, path: str) -> Action:
    return "hang" if path.endswith("/runs/update") else "pass"


def test_the_deadline_still_bounds_the_end_of_a_run_longer_than_it(
    tmp_path: Path, tracking_server: str, proxy_to: Callable[[str | None, Rule], str]
) -> None:
    """The deadline counts the waits on MLflow only (a run longer than it is tracked, see
    test_long_runs.py), and still bounds them: a server that answers the start and then
    never answers the call that ends the run holds the run for what the start left."""
    proxy_to(tracking_server, _hang_the_end)
    with pytest.warns(TrackingFailedWarning, match="TrackingTimeoutError"):
        result = run_workflow(
            # 15 s: the start's calls take 0.4 s alone on the machine, over 3 s at load 10,
            # 6 s once and over 10 s once (a full suite's first minutes, its slowest tests
            # starting servers and workers beside it).
            load_workflow(workflow(tmp_path, "timeout_s: 15")),
            simulated_latency_s=16.0,
        )
    assert result.state["summary"] and result.usage.llm_calls == 1
    (warning,) = result.warnings
    assert "MLflow did not finish ending run" in warning
    assert "observability.mlflow.timeout_s (15 s for all of a run's MLflow calls)" in warning
