"""Shared machinery: results, the table, temp dirs, the pre-migrated MLflow store, workers."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent


@dataclass
class Row:
    """One gated (or informational, when ``passed`` is None) measurement."""

    metric: str
    value: float
    unit: str
    target: str
    passed: bool | None

    def shown(self) -> str:
        if self.unit == "x":
            return f"{self.value:.2f}x"
        if self.unit == "%":
            return f"{self.value:.1f} %"
        if self.unit == "ms":
            return f"{self.value:.1f} ms"
        if self.unit == "s":
            return f"{self.value:.2f} s"
        return f"{self.value:.0f} {self.unit}"

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.passed]


@dataclass
class BenchResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    error: str | None = None

    def gate(self, metric: str, value: float, unit: str, target: str, ok: bool) -> None:
        self.rows.append(Row(metric, value, unit, target, ok))

    def info(self, metric: str, value: float, unit: str) -> None:
        self.rows.append(Row(metric, value, unit, "-", None))

    def note(self, text: str) -> None:
        self.details.append(text)


@dataclass
class Context:
    """What every benchmark gets: where to work, how hard, and the pre-migrated store."""

    root: Path
    quick: bool
    template_db: Path

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mlflow_store(self, directory: Path) -> str:
        """A copy of the migrated store in ``directory``; returns its tracking URI."""
        db = directory / "mlflow.db"
        # An earlier sample's write-ahead log beside a fresh copy would be replayed into it
        # (a malformed database: its traces then read as "not fully exported").
        for leftover in (db.with_name("mlflow.db-wal"), db.with_name("mlflow.db-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copy(self.template_db, db)
        return f"sqlite:///{db}"

    def env(self, tracking_uri: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"):
            env.pop(name, None)
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
                ),
                "MLFLOW_TRACKING_URI": tracking_uri,
                # No network here: MLflow must not try to download its model catalog.
                "MLFLOW_MODEL_CATALOG_URI": "",
                "AGENTS_PIPELINES_LLM_BACKEND": "simulated",
                "AGENTS_PIPELINES_SIMULATED_LATENCY_S": "0",
                "PYTHONWARNINGS": "ignore",
                "DAGSTER_DISABLE_TELEMETRY": "1",
            }
        )
        env.update(extra)
        return env


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def spread(values: list[float]) -> str:
    """Median and min–max, in ms, for the details lines."""
    ms = [v * 1000 for v in values]
    return f"median {median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


def migrate_template(directory: Path) -> tuple[Path, float]:
    """Create and migrate one MLflow SQLite store (in a subprocess); returns it and the time."""
    db = directory / "template-mlflow.db"
    code = (
        "import sqlite3, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore\n"
        "t1 = time.perf_counter()\n"
        f"s = SqlAlchemyStore('sqlite:///{db}', '{directory / 'artifacts'}')\n"
        "s.engine.dispose()\n"
        "t2 = time.perf_counter()\n"
        f"c = sqlite3.connect('{db}'); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()\n"
        "print(t2 - t1)\n"
    )
    out = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, check=True, cwd=directory
    )
    return db, float(out.stdout.strip().splitlines()[-1])


class Worker:
    """A long-lived subprocess running one scenario (benchmarks.scenarios), so variants that
    would share global state (MLflow autolog, tracking URI) stay apart while the parent
    interleaves their runs."""

    def __init__(
        self,
        scenario: str,
        params: Mapping[str, Any],
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
    ):
        self.scenario = scenario
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "benchmarks._worker", scenario, json.dumps(dict(params))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            env=dict(env),
            cwd=cwd,
        )
        self._ready: dict[str, Any] | None = None

    @property
    def ready(self) -> dict[str, Any]:
        """The set-up reply (waits for it): workers built together start in parallel."""
        if self._ready is None:
            self._ready = self._reply()
        return self._ready

    def call(self, op: str = "run") -> dict[str, Any]:
        assert self.ready and self.proc.stdin is not None
        self.proc.stdin.write(op + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text()[-3000:]
            raise RuntimeError(f"worker {self.scenario} died (rc {self.proc.returncode}):\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.scenario}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def interleave(
    workers: Mapping[str, Worker],
    rounds: int,
    warmup: int,
    after: Callable[[str, Worker], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Warm each worker up, then run them in turn (A B C, A B C, ...) ``rounds`` times."""
    for worker in workers.values():
        assert worker.ready
    for name, worker in workers.items():
        for _ in range(warmup):
            worker.call()
            if after:
                after(name, worker)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in workers}
    for _ in range(rounds):
        for name, worker in workers.items():
            results[name].append(worker.call())
            if after:
                after(name, worker)
    return results


def timed_subprocess(
    argv: list[str], env: Mapping[str, str], cwd: Path, log: Path
) -> tuple[float, str]:
    """Wall time of a whole process, from spawn to exit; fails loudly on a non-zero exit."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    log.write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return elapsed, done.stdout
