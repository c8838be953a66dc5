"""What a run worker imports before its step does any work, in CPU seconds (not wall: the
machine is shared): ``python -m benchmarks._run_worker_cpu``, with
AGENTS_PIPELINES_WORKFLOWS_DIR set. Prints one JSON line, phase -> CPU seconds."""

import json
import resource


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    phases = {"interpreter start": _cpu()}
    mark = phases["interpreter start"]

    def lap(name: str) -> None:
        nonlocal mark
        now = _cpu()
        phases[name] = now - mark
        mark = now

    import dagster  # noqa: F401

    lap("import dagster")
    import agents_pipelines.definitions

    lap("code location (our imports + build)")
    import agents_pipelines.runner  # noqa: F401

    lap("runner imports (LangGraph, LangChain)")
    from agents_pipelines.tracking.client import import_tracer

    import_tracer()  # MLflow and its LangChain tracer, as the step's resources import them

    lap("MLflow imports")
    print(json.dumps(phases))


if __name__ == "__main__":
    main()
