"""Code-location load in a fresh process: ``python _load_child.py MODE DIR COUNT``.

Run as a script, not as part of the benchmarks package, so nothing else is imported.
MODE ``ours``: what ``-m agents_pipelines.definitions`` does, phase by phase.
MODE ``plain``: COUNT hand-written ``@dg.asset``s with the same Dagster-facing shape
(config schema, metadata, kinds, group, code version, pool, resource parameter).
Both then do what Dagster's code server does at load (``get_repository_def`` and
``load_all_definitions``) and what it does to serve the location (``RepositorySnap``).
Prints one JSON line of phase times (seconds) on stdout.
"""

import time

STARTED = time.time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

HEAVY = ("mlflow", "langgraph", "langchain_core", "langchain_google_genai", "google.genai")


def _clock() -> float:
    return time.perf_counter()


def ours(directory: str, phases: dict[str, float]) -> Any:
    t = _clock()
    import dagster  # noqa: F401

    phases["import_dagster"] = _clock() - t
    t = _clock()
    from agents_pipelines.orchestration import definitions_from_env

    phases["import_ours"] = _clock() - t
    t = _clock()
    # What definitions_from_env imports before it builds (to announce the backend).
    import agents_pipelines.llm.backend  # noqa: F401

    phases["import_llm_backend"] = _clock() - t
    os.environ["AGENTS_PIPELINES_WORKFLOWS_DIR"] = directory
    t = _clock()
    defs = definitions_from_env()
    phases["build"] = _clock() - t
    return defs


def plain(count: int, phases: dict[str, float]) -> Any:
    t = _clock()
    import dagster as dg

    phases["import_dagster"] = _clock() - t
    phases["import_ours"] = 0.0
    phases["import_llm_backend"] = 0.0
    t = _clock()

    class Runner(dg.ConfigurableResource):
        llm_backend: str | None = None
        mlflow_ui_url: str | None = None
        simulated_latency_s: float | None = None

    mermaid = (
        "flowchart TD\n  START --> research\n  research --> outline\n  outline --> write\n"
        "  write --> END\n"
    )
    nodes = [
        {"id": n, "outputs": o, "model": "gemini-2.5-flash"}
        for n, o in (("research", ["facts"]), ("outline", ["outline"]), ("write", ["article"]))
    ]
    assets = []
    for i in range(count):
        name = f"plain_{i:04d}"
        path = f"/tmp/{name}.yaml"
        metadata = {
            "dagster/code_references": dg.CodeReferencesMetadataValue(
                code_references=[
                    dg.LocalFileCodeReference(file_path=path, line_number=1, label="Workflow YAML")
                ]
            ),
            "graph": dg.MetadataValue.md(f"```mermaid\n{mermaid}```"),
            "nodes": dg.MetadataValue.json(nodes),
            "models": dg.MetadataValue.json(["gemini-2.5-flash"]),
            "workflow_file": dg.MetadataValue.path(path),
        }
        config = {
            "topic": dg.Field(str, default_value="Dagster", is_required=False, description="t")
        }

        @dg.asset(
            key=dg.AssetKey(name),
            group_name="bench",
            description=f"Benchmark workflow {name}.",
            kinds={"langgraph", "gemini", "mlflow"},
            metadata=metadata,
            code_version=f"{i:016x}",
            config_schema=config,
            pool="gemini",
        )
        def _asset(context: dg.AssetExecutionContext, workflow_runner: Runner) -> dg.Output[dict]:
            return dg.Output({})

        assets.append(_asset)
    defs = dg.Definitions(assets=assets, resources={"workflow_runner": Runner()})
    phases["build"] = _clock() - t
    return defs


def main() -> None:
    import warnings

    warnings.simplefilter("ignore")
    mode, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    phases: dict[str, float] = {"started_at": STARTED}
    defs = ours(directory, phases) if mode == "ours" else plain(count, phases)
    from agents_pipelines._compat.dagster import serialized_repository_snapshot

    t = _clock()
    repo = defs.get_repository_def()
    repo.load_all_definitions()
    phases["resolve"] = _clock() - t
    assets = len(list(repo.asset_graph.get_all_asset_keys()))
    t = _clock()
    serialized_repository_snapshot(repo)
    phases["snapshot"] = _clock() - t
    heavy = [m for m in HEAVY if m in sys.modules]
    print(json.dumps({"phases": phases, "assets": assets, "heavy_modules": heavy}))


if __name__ == "__main__":
    main()
