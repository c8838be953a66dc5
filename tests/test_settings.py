"""The environment, read into one typed class: defaults, errors that name the variable and
what it allows, the cache, and the one place MLflow's environment is written."""

from __future__ import annotations

import os

import pytest

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.llm.backend import Backend, chat_model_factory, resolve_backend
from agents_pipelines.orchestration.definitions_factory import definitions_from_env
from agents_pipelines.settings import Settings, settings
from agents_pipelines.spec.models import MlflowConfig
from agents_pipelines.tracking import resolve_settings
from agents_pipelines.tracking.mlflow_env import set_mlflow_env_defaults

OURS = (
    "AGENTS_PIPELINES_LLM_BACKEND",
    "AGENTS_PIPELINES_CASSETTE",
    "AGENTS_PIPELINES_SIMULATED_LATENCY_S",
    "AGENTS_PIPELINES_WORKFLOWS_DIR",
    "AGENTS_PIPELINES_INVALID_WORKFLOWS",
    "AGENTS_PIPELINES_EXECUTOR",
    "AGENTS_PIPELINES_CELERY_CONFIG",
    "AGENTS_PIPELINES_MLFLOW_UI_URL",
    "MLFLOW_TRACKING_URI",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
)
MLFLOW_DEFAULTS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS",
    "MLFLOW_ALLOW_FILE_STORE",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS",
)


def unset(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> None:
    """Unset ``names`` for this test; monkeypatch restores them (set or not) afterwards."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    unset(monkeypatch, OURS)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    current = settings()
    assert current.llm_backend is None and resolve_backend() is Backend.GEMINI
    assert current.cassette is None
    assert current.simulated_latency_s == 0.0
    assert current.workflows_dir == "workflows"
    assert current.invalid_workflows == "fail"
    assert current.executor == "in_process"
    assert current.api_key is None
    assert current.gemini_base_url is None
    assert current.mlflow_tracking_uri is None and current.mlflow_ui_url is None


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("AGENTS_PIPELINES_LLM_BACKEND", "foo", "gemini, simulated, record, replay"),
        ("AGENTS_PIPELINES_INVALID_WORKFLOWS", "ignore", "fail, skip"),
        ("AGENTS_PIPELINES_EXECUTOR", "dask", "in_process, multiprocess, celery"),
    ],
)
def test_a_bad_choice_names_the_variable_and_the_allowed_values(
    clean_env: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    clean_env.setenv(name, value)
    expected = f"{name}='{value}' is not valid: it must be one of {allowed}, or unset"
    with pytest.raises(AgentsPipelinesError, match=expected):
        settings()
    with pytest.raises(AgentsPipelinesError, match=expected):  # the code location's path
        definitions_from_env()


def test_a_bad_backend_variable_fails_the_run_path(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTS_PIPELINES_LLM_BACKEND", "foo")
    expected = (
        "AGENTS_PIPELINES_LLM_BACKEND='foo' is not valid: it must be one of gemini, simulated"
    )
    with pytest.raises(AgentsPipelinesError, match=expected):
        resolve_backend()


def test_every_bad_variable_is_named_at_once(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTS_PIPELINES_EXECUTOR", "dask")
    clean_env.setenv("AGENTS_PIPELINES_SIMULATED_LATENCY_S", "slow")
    with pytest.raises(AgentsPipelinesError) as raised:
        settings()
    message = str(raised.value)
    assert "AGENTS_PIPELINES_EXECUTOR='dask' is not valid" in message
    assert "AGENTS_PIPELINES_SIMULATED_LATENCY_S='slow' is not valid" in message
    assert "valid number" in message


def test_latency_is_a_non_negative_number(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTS_PIPELINES_SIMULATED_LATENCY_S", "-1")
    expected = "LATENCY_S='-1' is not valid: input should be greater than or equal to 0"
    with pytest.raises(AgentsPipelinesError, match=expected):
        chat_model_factory(Backend.SIMULATED)
    clean_env.setenv("AGENTS_PIPELINES_SIMULATED_LATENCY_S", "0.25")
    assert settings().simulated_latency_s == 0.25


def test_choices_are_normalized_and_empty_means_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTS_PIPELINES_LLM_BACKEND", " Simulated ")
    clean_env.setenv("AGENTS_PIPELINES_EXECUTOR", "MULTIPROCESS")
    clean_env.setenv("AGENTS_PIPELINES_INVALID_WORKFLOWS", "")
    clean_env.setenv("GOOGLE_GEMINI_BASE_URL", "")
    assert resolve_backend() is Backend.SIMULATED
    assert settings().executor == "multiprocess"
    assert settings().invalid_workflows == "fail"
    assert settings().gemini_base_url is None


def test_the_key_is_secret_and_google_api_key_wins(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("GEMINI_API_KEY", "second-key-3b9d1f")
    current = settings()
    assert current.api_key is not None
    assert current.api_key.get_secret_value() == "second-key-3b9d1f"
    assert "second-key-3b9d1f" not in repr(current) and "second-key" not in str(current)
    clean_env.setenv("GOOGLE_API_KEY", "first-key-8c2e4a")
    assert settings().api_key.get_secret_value() == "first-key-8c2e4a"  # type: ignore[union-attr]


def test_parsed_once_until_a_variable_changes(clean_env: pytest.MonkeyPatch) -> None:
    first = settings()
    assert settings() is first  # not parsed again
    clean_env.setenv("AGENTS_PIPELINES_WORKFLOWS_DIR", "elsewhere")
    changed = settings()
    assert changed is not first and changed.workflows_dir == "elsewhere"
    clean_env.delenv("AGENTS_PIPELINES_WORKFLOWS_DIR")
    assert settings() is first  # the earlier environment, still parsed
    settings.cache_clear()  # type: ignore[attr-defined]
    again = settings()
    assert again is not first and again == first


def test_the_class_reads_the_environment_itself(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AGENTS_PIPELINES_MLFLOW_UI_URL", "https://mlflow.example")
    assert Settings().mlflow_ui_url == "https://mlflow.example"


def test_resolving_tracking_settings_leaves_the_environment_alone(
    clean_env: pytest.MonkeyPatch,
) -> None:
    unset(clean_env, MLFLOW_DEFAULTS)
    clean_env.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example")
    before = dict(os.environ)
    tracking = resolve_settings(MlflowConfig(), "flow")
    assert tracking.tracking_uri == "https://mlflow.example"
    assert tracking.ui_url == "https://mlflow.example"
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://mlflow.example", {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3"}),
        ("sqlite:///mlflow.db", {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": None}),
        ("file:///tmp/mlruns", {"MLFLOW_ALLOW_FILE_STORE": "true"}),
        ("sqlite:///mlflow.db", {"MLFLOW_ALLOW_FILE_STORE": None}),
        # One writer at a time on SQLite: span batches queue in one thread, not on the lock.
        ("sqlite:///mlflow.db", {"MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS": "1"}),
        ("http://127.0.0.1:5000", {"MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS": None}),
    ],
)
def test_mlflow_env_defaults_fit_the_tracking_uri(
    monkeypatch: pytest.MonkeyPatch, uri: str, expected: dict[str, str | None]
) -> None:
    unset(monkeypatch, MLFLOW_DEFAULTS)
    set_mlflow_env_defaults(uri)
    assert os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE"] == "100"
    assert {name: os.environ.get(name) for name in expected} == expected


def test_the_defaults_of_one_store_are_withdrawn_for_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite's one export thread is not kept for a server the process tracks to next; an
    operator's own setting is never withdrawn."""
    unset(monkeypatch, MLFLOW_DEFAULTS)
    set_mlflow_env_defaults("sqlite:///mlflow.db")
    assert os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS"] == "1"
    set_mlflow_env_defaults("http://127.0.0.1:5000")
    assert "MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS" not in os.environ
    monkeypatch.setenv("MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS", "4")
    set_mlflow_env_defaults("sqlite:///mlflow.db")
    set_mlflow_env_defaults("http://127.0.0.1:5000")
    assert os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_WORKERS"] == "4"


def test_the_operators_mlflow_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    unset(monkeypatch, MLFLOW_DEFAULTS)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE", "7")
    set_mlflow_env_defaults("http://127.0.0.1:5000")
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE"] == "7"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
