"""``python -m benchmarks [--quick] [--only NAME ...] [--keep]``: run the suite, print the table.

Exit status 1 when any gated row fails or a benchmark errors, so CI can run it if it wants.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    batch,
    code_location,
    critical_path,
    daemon_backfill,
    half_price,
    map_throughput,
    materialization,
    memory,
    redaction,
    run_launcher,
    tracing,
    whole_process,
)
from benchmarks.core import BenchResult, Context, migrate_template

BENCHMARKS: dict[str, Callable[[Context], BenchResult]] = {
    materialization.NAME: materialization.run,
    critical_path.NAME: critical_path.run,
    tracing.NAME: tracing.run,
    code_location.NAME: code_location.run,
    whole_process.NAME: whole_process.run,
    batch.NAME: batch.run,
    memory.NAME: memory.run,
    map_throughput.NAME: map_throughput.run,
    daemon_backfill.NAME: daemon_backfill.run,
    half_price.NAME: half_price.run,
    redaction.NAME: redaction.run,
    run_launcher.NAME: run_launcher.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument(
        "--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, stores)")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    root = Path(tempfile.mkdtemp(prefix="agents-pipelines-bench-"))
    started = time.perf_counter()
    try:
        template, migration_s = migrate_template(root)
        ctx = Context(root, args.quick, template)
        print(_header(args.quick, migration_s), flush=True)
        results = []
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                results.append(BENCHMARKS[name](ctx))
            except Exception:
                results.append(BenchResult(name, error=traceback.format_exc()))
            print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(_table(results))
    print(_details(results))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    failed = any(r.error or any(row.passed is False for row in r.rows) for r in results)
    return 1 if failed else 0


def _header(quick: bool, migration_s: float) -> str:
    mode = "quick (fewer repetitions)" if quick else "full"
    return (
        f"agents_pipelines benchmarks, {mode}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}\n"
        f"first MLflow SQLite migration (untimed elsewhere: each benchmark copies the "
        f"migrated store): {migration_s:.2f} s\n"
    )


def _table(results: list[BenchResult]) -> str:
    lines = [
        "| # | benchmark | metric | measured | target | result |",
        "| --- | --- | --- | ---: | --- | --- |",
    ]
    for number, result in enumerate(results, 1):
        index = list(BENCHMARKS).index(result.name) + 1 if result.name in BENCHMARKS else number
        if result.error:
            last = result.error.strip().splitlines()[-1]
            lines.append(f"| {index} | {result.name} | error: {last} | - | - | FAIL |")
        for row in result.rows:
            lines.append(
                f"| {index} | {result.name} | {row.metric} | {row.shown()} | {row.target} "
                f"| {row.verdict} |"
            )
    return "\n".join(lines)


def _details(results: list[BenchResult]) -> str:
    out = []
    for result in results:
        out.append(f"\n{result.name}:")
        out += [f"  {line}" for line in result.details]
        if result.error:
            out += [f"  {line}" for line in result.error.rstrip().splitlines()]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
