"""Prompts kept in the MLflow prompt registry, as the spec sees them: where a workflow names
one, MLflow's ``{{var}}`` syntax turned into ours and back, and a spec with each reference
replaced by the text of its pinned version.

Pure: reading the registry is tracking.prompt_registry's job. A spec with references is
what a file says; a pinned spec (``pinned``) is what a run executes, and every prompt in
it is text, so the graph, the estimate and the judges never see a reference.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from agents_pipelines.spec.findings import Finding, Hint, Path
from agents_pipelines.spec.models import RegistryPrompt, WorkflowSpec
from agents_pipelines.spec.placeholders import PlaceholderError, parse_template

# MLflow's variables: ``{{ name }}`` (spaces allowed inside, as PromptVersion.format does).
_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def registry_prompts(spec: WorkflowSpec) -> Iterator[tuple[Path, RegistryPrompt]]:
    """Each registry reference of ``spec`` with its field path, in file order."""
    for i, node in enumerate(spec.nodes):
        if isinstance(node.prompt, RegistryPrompt):
            yield ("nodes", i, "prompt"), node.prompt
    for i, entry in enumerate(spec.evals):
        if isinstance(entry.judge, RegistryPrompt):
            yield ("evals", i, "judge"), entry.judge


def has_registry_prompts(spec: WorkflowSpec) -> bool:
    return next(registry_prompts(spec), None) is not None


def inline_prompts(spec: WorkflowSpec) -> Iterator[tuple[Path, str, str]]:
    """(path, owner, text) of each inline node prompt and judge question: what
    ``agents-pipelines prompts push`` registers. The owner is the node id or eval name."""
    for i, node in enumerate(spec.nodes):
        if isinstance(node.prompt, str):
            yield ("nodes", i, "prompt"), node.id, node.prompt
    for i, entry in enumerate(spec.evals):
        if isinstance(entry.judge, str):
            yield ("evals", i, "judge"), entry.name, entry.judge


def prompt_name(flow: str, path: Path, owner: str) -> str:
    """The registry name ``prompts push`` gives a node's prompt (FLOW.NODE) or a judge's
    question (FLOW.eval.NAME)."""
    return f"{flow}.{owner}" if path[0] == "nodes" else f"{flow}.eval.{owner}"


def owner_of(spec: WorkflowSpec, path: Path) -> str:
    """The node id or eval name at ``path`` (``("nodes", 0, "prompt")`` -> the node's id)."""
    section, index = path[0], path[1]
    assert isinstance(index, int)
    return spec.nodes[index].id if section == "nodes" else spec.evals[index].name


def from_mlflow(template: str) -> str:
    """An MLflow template in our syntax: ``{{var}}`` -> ``{var}``, and every other brace
    doubled, so that it stays literal text (a JSON example in the prompt, say)."""
    parts, last = [], 0
    for match in _VARIABLE.finditer(template):
        parts.append(_literal(template[last : match.start()]))
        parts.append("{" + match.group(1) + "}")
        last = match.end()
    parts.append(_literal(template[last:]))
    return "".join(parts)


def to_mlflow(text: str) -> str:
    """Our template in MLflow's syntax: ``{field}`` -> ``{{field}}``, ``{{``/``}}`` -> the
    literal brace (``from_mlflow`` reads it back the same)."""
    return "".join(
        literal + ("{{" + field + "}}" if field else "")
        for literal, field in parse_template(text).parts
    )


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def template_findings(spec: WorkflowSpec, path: Path, text: str, uri: str) -> Iterator[Finding]:
    """The problems of a registry template (in our syntax) at ``path``: its variables must
    be state fields (a map node's item too, in its own node), as for an inline prompt."""
    try:
        template = parse_template(text)
    except PlaceholderError as exc:
        yield path, f"prompt {uri}: {exc.problem}", exc.fix
        return
    allowed = set(spec.state.fields)
    if path[0] == "nodes":
        node = spec.nodes[path[1]]  # type: ignore[index]
        allowed |= {node.map.as_} if node.map is not None else set()
    for name in template.fields:
        if name not in allowed:
            yield (
                path,
                f"prompt {uri} uses the variable {{{{{name}}}}}, which names no state field",
                Hint(name, list(spec.state.fields), "state fields"),
            )


def pinned(spec: WorkflowSpec, versions: Mapping[Path, tuple[str, str]]) -> WorkflowSpec:
    """``spec`` with the reference at each path of ``versions`` pinned to (URI, text in our
    syntax): what a run executes. The references stay, so a node knows its version."""
    if not versions:
        return spec
    nodes = [
        _pinned(node, "prompt", versions.get(("nodes", i, "prompt")))
        for i, node in enumerate(spec.nodes)
    ]
    evals = [
        _pinned(entry, "judge", versions.get(("evals", i, "judge")))
        for i, entry in enumerate(spec.evals)
    ]
    return spec.model_copy(update={"nodes": nodes, "evals": evals})


def _pinned(owner: Any, field: str, version: tuple[str, str] | None) -> Any:
    reference = getattr(owner, field)
    if version is None or not isinstance(reference, RegistryPrompt):
        return owner
    return owner.model_copy(update={field: reference.pin(*version)})
