"""``agents-pipelines``: validate workflow files, run one without Dagster, estimate what a run
costs, prune what is past retention, print the schema."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from agents_pipelines.errors import AgentsPipelinesError, WorkflowConfigError
from agents_pipelines.llm.backend import Backend
from agents_pipelines.redaction import RedactingFilter, masking, redact
from agents_pipelines.settings import BACKEND_ENV, settings
from agents_pipelines.spec import Workflow, load_workflow, load_workflows, workflow_json_schema

# `make dev` (scripts/dev.sh) applies the same rule and prints the same banner.
NO_KEY_BANNER = f"""\
==========================================================================================
  NO GOOGLE_API_KEY SET: RUNNING THE *SIMULATED* LLM BACKEND.
  No Gemini calls will be made; token counts and costs are ESTIMATES for the configured
  models. Set GOOGLE_API_KEY (https://aistudio.google.com/apikey) for Gemini, or choose
  a backend yourself: --backend simulated|gemini, or {BACKEND_ENV}=simulated|gemini.
=========================================================================================="""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.command(args))
    except AgentsPipelinesError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        stopped_by = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        print(f"error: stopped by {stopped_by.name}", file=sys.stderr)
        return 128 + stopped_by


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, like Ctrl-C: a run's failure path then
    records the MLflow run as FAILED with its spend, instead of leaving it RUNNING."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can take signals
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agents-pipelines", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = commands.add_parser("validate", help="check workflow files; exit 1 on problems")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    validate.set_defaults(command=_validate)

    run = commands.add_parser("run", help="run one workflow without Dagster")
    run.add_argument("file", metavar="FILE")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="an input; non-str fields take JSON (e.g. --input tags='[\"a\"]')",
    )
    run.add_argument(
        "--backend",
        choices=["gemini", "simulated", "record", "replay"],
        help="override AGENTS_PIPELINES_LLM_BACKEND (record and replay: AGENTS_PIPELINES_CASSETTE)",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="show tracking and the state")
    run.set_defaults(command=_run)

    estimate = commands.add_parser(
        "estimate", help="expected tokens and USD of a run, before spending (see README)"
    )
    estimate.add_argument("file", metavar="FILE")
    estimate.add_argument(
        "--input", "-i", action="append", default=[], metavar="FIELD=VALUE", help="as for run"
    )
    estimate.add_argument(
        "--items", type=_positive, metavar="N", help="items of every map node (each one a call)"
    )
    estimate.add_argument(
        "--partitions", type=_positive, metavar="N", help="also show N runs (one per partition)"
    )
    estimate.set_defaults(command=_estimate)

    _add_eval(commands)
    _add_prompts(commands)

    prune = commands.add_parser(
        "prune", help="delete what workflows keep past their retention_days (see docs)"
    )
    prune.add_argument(
        "paths", nargs="*", metavar="FILE", help="files or folders (default: the workflows folder)"
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    prune.set_defaults(command=_prune)

    schema = commands.add_parser("schema", help="print the JSON Schema of workflow files")
    schema.set_defaults(command=_schema)
    return parser


def _add_eval(commands: Any) -> None:
    from agents_pipelines.dataset_eval.eval_command import add_eval_command

    add_eval_command(commands, _positive, _backend)


def _add_prompts(commands: Any) -> None:
    from agents_pipelines.prompts_command import add_prompts_command

    add_prompts_command(commands)


def _validate(args: argparse.Namespace) -> int:
    workflows, issues = load_workflows(args.paths)
    issues += _at_load(workflows)[1]
    for issue in issues:
        print(issue)
    bad = len({issue.file for issue in issues})
    print(f"{len(workflows)} valid workflow(s), {bad} invalid file(s), {len(issues)} problem(s)")
    return 1 if issues else 0


def _run(args: argparse.Namespace) -> int:
    if args.verbose:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(RedactingFilter())  # every agents_pipelines module logs through it
        package = logging.getLogger("agents_pipelines")
        package.addHandler(handler)
        package.setLevel(logging.INFO)
    workflow = load_workflow(args.file)
    from agents_pipelines.runner import run_workflow  # heavy imports only for `run`

    inputs = _parse_inputs(workflow, args.input)
    with _sigterm_as_interrupt():
        result = run_workflow(workflow, inputs, backend=_backend(args.backend))
    # redact_pii: what is printed is masked too (the state with --verbose).
    with masking(workflow.spec.config.observability.mlflow.pii()):
        _print_result(result, args.verbose)
    return 0


def _print_result(result: Any, verbose: bool) -> None:
    tokens = result.usage.tokens
    print(
        f"✓ {result.workflow} finished in {result.duration_s:.2f} s "
        f"(backend: {result.backend.value}, {result.node_count} node run(s))"
    )
    print(f"  LLM calls: {result.usage.llm_calls}")
    if hits := result.usage.cache_hits:
        print(
            f"  development cache: {hits} call(s) answered, "
            f"${result.usage.saved_cost_usd:.6f} saved"
        )
    print(
        f"  tokens: {tokens.total} total, {tokens.prompt} prompt, {tokens.completion} "
        f"completion ({tokens.reasoning} reasoning), {tokens.cached} cached"
    )
    unpriced = result.usage.unpriced_models
    print(
        f"  cost: ${result.usage.total_cost_usd:.6f} USD"
        + (f" (no price for: {', '.join(unpriced)})" if unpriced else "")
    )
    if result.verdicts:
        usage = result.usage
        spent = f"${usage.eval_cost_usd:.6f} USD, {usage.eval_tokens} tokens"
        print(f"  evals: {spent} (part of the figures above)")
        for verdict in result.verdicts:
            mark = "✓" if verdict.passed else "✗"
            print(f"    {mark} {verdict.name} ({verdict.kind}): {redact(verdict.rationale)}")
    if result.tracking:
        print(f"  MLflow run: {result.tracking.run_url}")
    for warning in result.warnings:
        print(f"  warning: {redact(warning)}")
    if verbose:
        print(redact(json.dumps(result.state, indent=2, ensure_ascii=False, default=str)))


def _backend(explicit: str | None) -> str | None:
    """The no-key rule of what a person starts by hand (`make dev` too): when nothing chose a
    backend and no Gemini key is set, run the simulated backend and say so loudly on stderr.
    A backend chosen by flag or environment is kept: Gemini without a key then fails with
    MissingApiKeyError, which names both ways out."""
    environment = settings()
    if explicit or environment.llm_backend:
        return explicit
    if environment.api_key is not None:
        return None
    print(NO_KEY_BANNER, file=sys.stderr)
    return Backend.SIMULATED.value


def _parse_inputs(workflow: Workflow, pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise AgentsPipelinesError(f"--input {pair!r} needs the form FIELD=VALUE")
        field = workflow.spec.state.fields.get(name)
        if field is None or field.type == "str":
            inputs[name] = raw  # unknown names are reported by input validation
            continue
        try:
            inputs[name] = json.loads(raw)
        except json.JSONDecodeError:
            raise AgentsPipelinesError(
                f"--input {name}: `{raw}` is not JSON, and {name} is {field.type} "
                '(give e.g. 3, true or ["a", "b"])'
            ) from None
    return inputs


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number of 1 or more")
    return value


def _estimate(args: argparse.Namespace) -> int:
    from agents_pipelines.estimate_command import estimate_workflow, render_estimate

    workflow = _pinned_now(load_workflow(args.file))
    inputs = _parse_inputs(workflow, args.input)
    print(render_estimate(estimate_workflow(workflow, inputs, items=args.items), args.partitions))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from agents_pipelines.llm.cache import CACHE_FILE
    from agents_pipelines.orchestration.retention import instance_from_env
    from agents_pipelines.prune_command import prune_workflows, render
    from agents_pipelines.run_parts import DEFAULT_CACHE_DIR

    workflows, issues = load_workflows(args.paths or [settings().workflows_dir])
    for issue in issues:
        print(issue, file=sys.stderr)
    if issues:
        print(
            "error: fix the files above first: prune reads retention_days from each",
            file=sys.stderr,
        )
        return 1
    instance = instance_from_env()
    if instance is None:
        print(
            "note: DAGSTER_HOME is not set: checkpoints and the spend journal of a Dagster "
            "instance are not pruned",
            file=sys.stderr,
        )
    try:
        removals = prune_workflows(
            workflows,
            dry_run=args.dry_run,
            instance=instance,
            cache_files=[DEFAULT_CACHE_DIR / CACHE_FILE],
        )
    finally:
        if instance is not None:
            instance.dispose()
    print(render(removals, workflows, args.dry_run))
    return 0


def _at_load(workflows: list[Workflow]) -> tuple[list[Workflow], list[Any]]:
    """The workflows with their MLflow registry prompts read, and those prompts' problems
    (MLflow is imported only when a workflow names one)."""
    from agents_pipelines.spec.prompt_refs import has_registry_prompts

    if not any(has_registry_prompts(w.spec) for w in workflows):
        return workflows, []
    from agents_pipelines.tracking.prompt_registry import at_load

    return at_load(workflows)


def _pinned_now(workflow: Workflow) -> Workflow:
    """``workflow`` with its registry prompts read now; raises on a problem."""
    (pinned,), issues = _at_load([workflow])
    if issues:
        raise WorkflowConfigError(issues)
    return pinned


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(workflow_json_schema(), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
