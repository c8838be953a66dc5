"""Workflow YAML generators: the same shapes for every variant of a benchmark."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

_HEADER = """\
schema_version: "1"
flow:
  name: {name}
  description: Benchmark workflow {name}.
"""

_FOOTER = """\
config:
  llm: {{provider: google, model: gemini-2.5-flash, temperature: 0.7}}
  observability:
    mlflow: {{enabled: {tracing}, experiment_name: bench}}
orchestration:
  group: bench
  inputs: {{topic: "Dagster"}}
"""


def three_node(name: str, *, tracing: bool = True) -> str:
    """research (structured list) → outline (text) → write (structured, two outputs)."""
    body = """\
state:
  fields:
    topic:      {type: str, required: true, description: What to write about}
    facts:      {type: "list[str]", default: [], description: Facts about the topic}
    outline:    {type: str, default: ""}
    article:    {type: str, default: ""}
    word_count: {type: int, default: 0, description: Words in the article}
nodes:
  - id: research
    prompt: "List five facts about {topic}."
    outputs: [facts]
  - id: outline
    prompt: "Outline an article about {topic} using these facts: {facts}"
    outputs: [outline]
  - id: write
    prompt: "Write an article on {topic} from this outline: {outline}. Facts: {facts}"
    outputs: [article, word_count]
edges:
  - {from: START, to: research}
  - {from: research, to: outline}
  - {from: outline, to: write}
  - {from: write, to: END}
"""
    return _HEADER.format(name=name) + body + _FOOTER.format(tracing=_yaml_bool(tracing))


# A support ticket of about 600 characters with an email address and a phone number.
TICKET = (
    "Hello, I ordered a blue jacket last week and it has not arrived yet. " * 7
    + "Reach me at jane.doe@example.com or +1 415-555-0132. Thanks!"
)


def linear(
    name: str, calls: int, *, tracing: bool = True, redact_pii: bool = False, ticket: bool = False
) -> str:
    """``calls`` text nodes in a chain: one LLM call each. ``redact_pii``: masked;
    ``ticket``: a ticket holding personal data as the topic."""
    fields = "".join(f'    out_{i}: {{type: str, default: ""}}\n' for i in range(calls))
    nodes = "".join(
        f'  - id: step_{i}\n    prompt: "Step {i} on {{topic}}."\n    outputs: [out_{i}]\n'
        for i in range(calls)
    )
    chain = ["START", *(f"step_{i}" for i in range(calls)), "END"]
    edges = "".join(f"  - {{from: {a}, to: {b}}}\n" for a, b in pairwise(chain))
    body = (
        "state:\n  fields:\n    topic: {type: str, required: true}\n"
        + fields
        + "nodes:\n"
        + nodes
        + "edges:\n"
        + edges
    )
    footer = _FOOTER.format(tracing=_yaml_bool(tracing))
    if redact_pii:
        footer = footer.replace(
            "experiment_name: bench}", "experiment_name: bench, redact_pii: true}"
        )
    if ticket:
        footer = footer.replace('{topic: "Dagster"}', "{topic: " + json.dumps(TICKET) + "}")
    return _HEADER.format(name=name) + body + footer


def fan_out(name: str, width: int, *, tracing: bool = True) -> str:
    """``width`` parallel text nodes from START, then one join node: critical path of 2 calls."""
    fields = "".join(f'    part_{i}: {{type: str, default: ""}}\n' for i in range(width))
    nodes = "".join(
        f'  - id: branch_{i}\n    prompt: "Angle {i} on {{topic}}."\n    outputs: [part_{i}]\n'
        for i in range(width)
    )
    joined = " ".join(f"{{part_{i}}}" for i in range(width))
    nodes += f'  - id: join\n    prompt: "Combine: {joined}"\n    outputs: [combined]\n'
    edges = "".join(f"  - {{from: START, to: branch_{i}}}\n" for i in range(width))
    sources = ", ".join(f"branch_{i}" for i in range(width))
    edges += f"  - {{from: [{sources}], to: join}}\n  - {{from: join, to: END}}\n"
    body = (
        "state:\n  fields:\n    topic: {type: str, required: true}\n"
        + fields
        + '    combined: {type: str, default: ""}\n'
        + "nodes:\n"
        + nodes
        + "edges:\n"
        + edges
    )
    return _HEADER.format(name=name) + body + _FOOTER.format(tracing=_yaml_bool(tracing))


def write_workflow(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _yaml_bool(value: bool) -> str:
    return "true" if value else "false"


def partitioned(text: str, keys: int) -> str:
    """``text`` with ``keys`` static partitions, each with its own topic."""
    partitions = "".join(f"      p{i:02d}: {{topic: topic {i}}}\n" for i in range(keys))
    return text + "  partitions:\n    static:\n" + partitions


def two_maps(name: str, items: int, max_concurrency: int) -> str:
    """Two calls per item: ``summarize`` maps over ``items`` documents, then ``label`` maps
    over the summaries; each at most ``max_concurrency`` calls in flight."""
    docs = ", ".join(f'"document {i}"' for i in range(items))
    limit = f"max_concurrency: {max_concurrency}, max_items: {max(items, 1000)}"
    body = f"""\
state:
  fields:
    docs:      {{type: "list[str]", required: true}}
    summaries: {{type: "list[str]", default: []}}
    labels:    {{type: "list[str]", default: []}}
nodes:
  - id: summarize
    map: {{over: docs, as: doc, {limit}}}
    prompt: "Summarize {{doc}} in one sentence."
    outputs: [summaries]
  - id: label
    map: {{over: summaries, as: summary, {limit}}}
    prompt: "Give a one-word label for: {{summary}}"
    outputs: [labels]
edges:
  - {{from: START, to: summarize}}
  - {{from: summarize, to: label}}
  - {{from: label, to: END}}
config:
  llm: {{provider: google, model: gemini-2.5-flash, max_retries: 0}}
  observability:
    mlflow: {{enabled: true, experiment_name: bench}}
orchestration:
  group: bench
  inputs: {{docs: [{docs}]}}
"""
    return _HEADER.format(name=name) + body


def one_map(name: str, items: int, max_concurrency: int, llm: str = "") -> str:
    """One call per item: ``label`` maps over ``items`` reviews, at most ``max_concurrency``
    in flight; ``llm`` adds settings to ``config.llm`` (``service_tier: flex``, ``batch``)."""
    reviews = ", ".join(f'"review {i}"' for i in range(items))
    limit = f"max_concurrency: {max_concurrency}, max_items: {max(items, 1000)}"
    extra = f", {llm}" if llm else ""
    body = f"""\
state:
  fields:
    reviews: {{type: "list[str]", required: true}}
    labels:  {{type: "list[str]", default: []}}
nodes:
  - id: label
    map: {{over: reviews, as: review, {limit}}}
    prompt: "Give a one-word label for: {{review}}"
    outputs: [labels]
edges:
  - {{from: START, to: label}}
  - {{from: label, to: END}}
config:
  llm: {{provider: google, model: gemini-2.5-flash, max_retries: 0{extra}}}
  observability:
    mlflow: {{enabled: true, experiment_name: bench}}
orchestration:
  group: bench
  inputs: {{reviews: [{reviews}]}}
"""
    return _HEADER.format(name=name) + body
