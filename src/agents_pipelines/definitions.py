"""The Dagster code location: ``dagster dev -m agents_pipelines.definitions``."""

from agents_pipelines.orchestration import definitions_from_env

defs = definitions_from_env()
