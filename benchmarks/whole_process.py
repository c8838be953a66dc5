"""5. Whole process: ``dagster asset materialize`` as a user runs it, against a plain script.

Both are fresh processes timed from spawn to exit, run in turn, same workflow (3 nodes,
zero LLM latency: the ratio is all overhead), same pre-migrated MLflow store. The Dagster
side uses a temp DAGSTER_HOME with the repository's dagster.yaml (created by one untimed
warm-up run) and AGENTS_PIPELINES_WORKFLOWS_DIR holding just that workflow. The code
location runs steps in-process (its default); for information, the same command with
Dagster's multiprocess executor (AGENTS_PIPELINES_EXECUTOR=multiprocess) is timed too: it
starts one more process for the step, which imports the code location again. --quick skips
the warm-up and the multiprocess variant and runs each command once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.core import BIN, PYTHON, REPO, BenchResult, Context, median, timed_subprocess
from benchmarks.workflows import three_node, write_workflow

NAME = "whole_process"
TARGET = 1.5
SCRIPT = Path(__file__).with_name("_plain_script.py")


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    path = write_workflow(work / "workflows", "three_nodes", three_node("three_nodes"))
    home = work / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = ctx.env(
        ctx.mlflow_store(work),
        AGENTS_PIPELINES_WORKFLOWS_DIR=str(path.parent),
        DAGSTER_HOME=str(home),
    )
    dagster = [str(BIN / "dagster"), "asset", "materialize", "-m", "agents_pipelines.definitions"]
    dagster += ["--select", "three_nodes"]
    commands = {
        "dagster": (dagster, env),
        "plain": ([PYTHON, str(SCRIPT), str(path)], env),
    }
    if not ctx.quick:
        multiprocess = {**env, "AGENTS_PIPELINES_EXECUTOR": "multiprocess"}
        commands["dagster_multiprocess"] = (dagster, multiprocess)
    if not ctx.quick:  # an untimed run first: it creates the DAGSTER_HOME storage
        timed_subprocess(dagster, env, work, work / "warm-up.log")
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(ctx.reps(5, 1)):
        for name, (argv, variant_env) in commands.items():
            wall, _ = timed_subprocess(argv, variant_env, work, work / f"{name}-{i}.log")
            times[name].append(wall)
    med = {name: median(t) for name, t in times.items()}
    ratio = med["dagster"] / med["plain"]
    result.gate("dagster CLI / plain script", ratio, "x", f"<= {TARGET}x", ratio <= TARGET)
    result.info("dagster asset materialize", med["dagster"], "s")
    result.info("plain script", med["plain"], "s")
    if "dagster_multiprocess" in med:
        result.info("dagster CLI, multiprocess executor", med["dagster_multiprocess"], "s")
    for name, t in times.items():
        result.note(f"{name:>18}: " + ", ".join(f"{v:.2f}" for v in t) + " s")
    return result
