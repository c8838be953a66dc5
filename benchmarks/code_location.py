"""4. Code-location load: Definitions from 1,000 workflow files, in a fresh process.

Each sample is a new process (``_load_child.py``): interpreter start, imports, build and
Dagster's own resolution are timed apart. "Build" is what our code adds: reading and
validating the files and creating the assets and Definitions (``definitions_from_env``).
The baseline process builds 1,000 hand-written ``@dg.asset``s of the same Dagster shape
(typed config field with default, the same metadata keys and sizes, kinds, group, code
version, pool, a ConfigurableResource parameter) with no files to read. Both then run what
Dagster's code server runs at load (``get_repository_def`` + ``load_all_definitions``);
the gated time is build + resolve. The snapshot Dagster serves to the UI is shown apart.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.core import PYTHON, BenchResult, Context, median, timed_subprocess
from benchmarks.workflows import three_node, write_workflow

NAME = "code_location"
COUNT = 1000
TARGET_S = 2.0
TARGET_RATIO = 2.5
CHILD = Path(__file__).with_name("_load_child.py")
PHASES: tuple[str, ...] = ("interpreter", "import_dagster", "import_ours", "import_llm_backend")
PHASES += ("build", "resolve", "snapshot", "wall")


def run(ctx: Context) -> BenchResult:
    result = BenchResult(NAME)
    work = ctx.workdir(NAME)
    folder = work / "workflows"
    for i in range(COUNT):
        write_workflow(folder, f"wf_{i:04d}", three_node(f"wf_{i:04d}"))
    env = ctx.env(ctx.mlflow_store(work))
    samples: dict[str, list[dict[str, Any]]] = {"ours": [], "plain": []}
    for i in range(ctx.reps(5, 1)):
        for mode in samples:
            argv = [PYTHON, str(CHILD), mode, str(folder), str(COUNT)]
            spawned = time.time()
            wall, out = timed_subprocess(argv, env, work, work / f"{mode}-{i}.log")
            reply = json.loads(out.strip().splitlines()[-1])
            if reply["assets"] != COUNT:
                raise RuntimeError(f"{mode}: expected {COUNT} assets, got {reply['assets']}")
            phases = reply["phases"]
            phases["interpreter"] = phases.pop("started_at") - spawned
            phases["wall"] = wall
            phases["heavy"] = reply["heavy_modules"]
            samples[mode].append(phases)

    def med(mode: str, *keys: str) -> float:
        return median(sum(s[k] for k in keys) for s in samples[mode])

    ours = med("ours", "build", "resolve")
    plain = med("plain", "build", "resolve")
    result.gate("build + resolve, 1,000 workflows", ours, "s", f"<= {TARGET_S:.1f} s", ours <= 2)
    ratio = ours / plain
    result.gate(
        "ours / 1,000 plain Dagster assets", ratio, "x", f"<= {TARGET_RATIO}x", ratio <= 2.5
    )
    result.info("plain Dagster build + resolve", plain, "s")
    result.info("interpreter start", med("ours", "interpreter"), "s")
    result.info("import dagster", med("ours", "import_dagster"), "s")
    result.info("import agents_pipelines (beyond dagster)", med("ours", "import_ours"), "s")
    for mode in samples:
        parts = ", ".join(f"{k} {med(mode, k):.2f}" for k in PHASES)
        result.note(f"{mode:>5} (s, medians of {len(samples[mode])}): {parts}")
    heavy = sorted({m for s in samples["ours"] for m in s["heavy"]})
    result.note(f"heavy modules imported by the load: {', '.join(heavy) or 'none'}")
    return result
