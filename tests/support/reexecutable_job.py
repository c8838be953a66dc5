"""A job that Dagster can rebuild by name (``dg.reconstructable``), which re-execution needs:
the asset job of the workflows in the folder $RESUME_TEST_WORKFLOWS, on the in-process
executor so that it runs against the test's loopback Gemini server."""

from __future__ import annotations

import os

import dagster as dg

from agents_pipelines.orchestration import build_definitions

WORKFLOWS_ENV = "RESUME_TEST_WORKFLOWS"


def workflows_job() -> dg.JobDefinition:
    defs = build_definitions(os.environ[WORKFLOWS_ENV], executor=dg.in_process_executor)
    # A job of its own name: Dagster refuses to rebuild its implicit asset job by name.
    job = dg.Definitions(jobs=[dg.define_asset_job("resume_test")])
    return dg.Definitions.merge(defs, job).resolve_job_def("resume_test")
