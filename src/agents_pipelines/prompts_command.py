"""``agents-pipelines prompts push FILE [--alias A]``: register a workflow's inline prompts
(its nodes' and its judges') in the MLflow prompt registry, and print the workflow as YAML
that references them instead.

The printed file is the original with each inline prompt replaced by
``{registry: prompts:/NAME@ALIAS}`` (or ``.../VERSION`` without ``--alias``); YAML comments
are not kept. The registry is the workflow's tracking store (MLFLOW_TRACKING_URI first).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

__all__ = ["add_prompts_command"]


def add_prompts_command(commands: Any) -> None:
    parser = commands.add_parser("prompts", help="the MLflow prompt registry")
    actions = parser.add_subparsers(required=True, metavar="ACTION")
    push = actions.add_parser(
        "push", help="register a workflow's inline prompts; print the YAML that uses them"
    )
    push.add_argument("file", metavar="FILE")
    push.add_argument(
        "--alias", metavar="A", help="point alias A at the new versions (e.g. production)"
    )
    push.set_defaults(command=_push)


def _push(args: argparse.Namespace) -> int:
    from agents_pipelines.spec import load_workflow
    from agents_pipelines.tracking.prompt_registry import push_prompts

    workflow = load_workflow(args.file)
    registered = push_prompts(workflow, args.alias)
    data = yaml.safe_load(workflow.text)
    for entry in registered:
        section, index, key = entry.path
        data[section][index][key] = {"registry": entry.reference}
        print(f"registered {entry.name} version {entry.version}", file=sys.stderr)
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), end="")
    return 0
