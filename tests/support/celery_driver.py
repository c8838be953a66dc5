"""Launch runs of the code location's assets, all at once, each run in its own process, as
Dagster's run launcher would: `execute_job` of the reconstructable asset job, so the
executor the environment selects (AGENTS_PIPELINES_EXECUTOR=celery) sends each step to a
Celery worker, which loads the code location by the same pointer.

Usage: celery_driver.py ASSET [ASSET ...]: one run per ASSET, in that order. The parent loads
the code location once and forks the run processes; it creates the pools first, as the run
queue daemon does (see load_driver.py). Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from typing import Any

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from agents_pipelines.definitions import defs
from load_driver import initialize_pools

CODE_LOCATION = ReconstructableRepository.for_module(
    "agents_pipelines.definitions", "defs", working_directory=os.getcwd()
)
ASSET_JOB = "__ASSET_JOB"


def _execute(index_and_asset: tuple[int, str]) -> dict[str, Any]:
    index, asset = index_and_asset
    job = CODE_LOCATION.get_reconstructable_job(ASSET_JOB)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            job,
            instance,
            asset_selection=[dg.AssetKey(asset)],
            tags={"load/index": str(index)},
            raise_on_error=False,
        )
    return {"run_id": result.run_id, "asset": asset, "success": result.success}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("assets", nargs="+")
    args = parser.parse_args()
    with dg.DagsterInstance.get() as instance:
        for asset in set(args.assets):
            initialize_pools(instance, defs.get_assets_def(asset))
    context = multiprocessing.get_context("fork")
    with context.Pool(len(args.assets), maxtasksperchild=1) as pool:
        for result in pool.imap_unordered(_execute, enumerate(args.assets)):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
