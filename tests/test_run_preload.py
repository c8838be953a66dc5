"""A run's process imports the step's libraries as Dagster builds the run's resources,
before its steps claim pool slots (orchestration/resource.py), so a run launched ahead of
the pool's free slots imports while other runs hold them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import json, sys
import dagster as dg
from agents_pipelines.orchestration.resource import WorkflowRunner

heavy = ("langgraph", "mlflow.langchain", "langchain_google_genai", "agents_pipelines.runner")
before = {name: name in sys.modules for name in heavy}
WorkflowRunner(llm_backend=sys.argv[1] or None).setup_for_execution(
    dg.build_init_resource_context()
)
print(json.dumps({"before": before, "after": {name: name in sys.modules for name in heavy}}))
"""


def _imports_at_setup(backend: str) -> dict[str, dict[str, bool]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, backend],
        capture_output=True,
        text=True,
        cwd=REPO,
        # The backend comes from the resource alone, whatever this process's environment.
        env={k: v for k, v in os.environ.items() if k != "AGENTS_PIPELINES_LLM_BACKEND"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, dict[str, bool]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("backend", "gemini_client"), [("simulated", False), ("gemini", True), ("", True)]
)
def test_the_runner_imports_the_steps_libraries_as_its_resources_are_built(
    backend: str, gemini_client: bool
) -> None:
    imported = _imports_at_setup(backend)
    # Loading the code location's resource class imports none of them (the webserver and
    # the daemon load it too) ...
    assert not any(imported["before"].values()), imported
    # ... building the resource for a run imports them all, Gemini's client only when the
    # run may call Gemini (the default backend does).
    after = imported["after"]
    assert after["langgraph"] and after["mlflow.langchain"] and after["agents_pipelines.runner"]
    assert after["langchain_google_genai"] is gemini_client
