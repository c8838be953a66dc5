"""``agents-pipelines eval WORKFLOW --dataset cases.jsonl``: the command's arguments, its
backend, and its exit codes.

Exit codes: 0 when the pass rate is at or above ``--min-pass-rate`` (or none is given),
1 below it, 2 when nothing could be evaluated: a missing or empty dataset, a workflow file
that does not load, an invalid backend, a workflow without MLflow tracking, or a threshold
with no scored case to hold it against. Skipped dataset lines do not change the exit code:
they are listed, and counted apart from the pass rate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents_pipelines.errors import AgentsPipelinesError
from agents_pipelines.redaction import redact
from agents_pipelines.settings import BACKEND_ENV, CASSETTE_ENV, settings

__all__ = ["add_eval_command"]

BACKENDS = ("simulated", "gemini", "record", "replay")
EXIT_BELOW_THRESHOLD = 1
EXIT_NOT_EVALUATED = 2

BackendRule = Callable[[str | None], str | None]


def add_eval_command(
    commands: Any, positive: Callable[[str], int], backend_rule: BackendRule
) -> None:
    parser = commands.add_parser(
        "eval", help="run a workflow over a dataset, score it, gate on the pass rate"
    )
    parser.add_argument("file", metavar="WORKFLOW")
    parser.add_argument("--dataset", required=True, type=Path, metavar="CASES.jsonl")
    parser.add_argument(
        "--min-pass-rate", type=_rate, metavar="RATE", help="exit 1 below it (0 to 1)"
    )
    parser.add_argument(
        "--concurrency", type=positive, default=4, metavar="N", help="cases at once (4)"
    )
    parser.add_argument("--backend", choices=BACKENDS, help=f"sets {BACKEND_ENV}")
    parser.add_argument("--cassette", metavar="PATH", help=f"sets {CASSETTE_ENV}")
    parser.set_defaults(command=lambda args: _eval(args, backend_rule))


def _eval(args: argparse.Namespace, backend_rule: BackendRule) -> int:
    from agents_pipelines.dataset_eval.cases import evaluate_dataset
    from agents_pipelines.dataset_eval.dataset import read_dataset
    from agents_pipelines.dataset_eval.report import render_report
    from agents_pipelines.spec import load_workflow

    try:
        _choose_backend(args, backend_rule)
        workflow = load_workflow(args.file)
        dataset = read_dataset(args.dataset, workflow)
        params = {"concurrency": args.concurrency, "min_pass_rate": args.min_pass_rate}
        params["llm_backend"] = settings().llm_backend or "gemini"
        report = evaluate_dataset(workflow, dataset, concurrency=args.concurrency, params=params)
    except AgentsPipelinesError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_NOT_EVALUATED
    print(render_report(report))
    return _verdict(report.pass_rate, args.min_pass_rate)


def _choose_backend(args: argparse.Namespace, backend_rule: BackendRule) -> None:
    """The flags become the environment the runs read; without them, the CLI's no-key rule
    (the simulated backend, announced) applies as for `run`."""
    if args.cassette:
        os.environ[CASSETTE_ENV] = args.cassette
    chosen = args.backend or backend_rule(None)
    if chosen:
        os.environ[BACKEND_ENV] = chosen
    from agents_pipelines.llm import check_backend

    # Refused here, before any case runs: a missing cassette or key, a malformed cassette.
    check_backend()


def _verdict(rate: float | None, threshold: float | None) -> int:
    if threshold is None:
        return 0
    if rate is None:
        print("error: no case was scored, so --min-pass-rate cannot be checked", file=sys.stderr)
        return EXIT_NOT_EVALUATED
    if rate < threshold:
        print(f"pass rate {rate:.1%} is below --min-pass-rate {threshold:.1%}: exit 1")
        return EXIT_BELOW_THRESHOLD
    print(f"pass rate {rate:.1%} meets --min-pass-rate {threshold:.1%}")
    return 0


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"`{text}` is not a rate from 0 to 1 (e.g. 0.9)")
    return value
