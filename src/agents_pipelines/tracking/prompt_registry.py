"""The MLflow prompt registry: read the prompts a workflow names, pin their versions for a
run, link them to its MLflow run and trace, and register a workflow's inline prompts.

- At load (``agents-pipelines validate``, the code location): ``registry_issues`` reads
  each ``{registry: URI}`` and reports a missing prompt, an unreachable registry or a
  variable that names no state field, located at the file's line.
- At run start: ``pin_prompts`` resolves each alias once (bypassing MLflow's 60 s alias
  cache, so a moved alias is seen by the next run) and returns ``PromptPins``: the
  versions, and the spec with their text. A resumed run passes the versions its
  checkpoint kept, so it runs the text its first attempt ran, wherever the alias points
  now (graph/resume.py keeps them with the checkpoint).
- ``push_prompts`` (``agents-pipelines prompts push``) registers a workflow's inline prompts.
- In the trace: ``link_prompts`` links the versions to the MLflow run
  (``MlflowClient.link_prompt_version_to_run``, which ``mlflow.genai.load_prompt`` calls
  for the fluent active run, and our runs are not fluent: session.py) and to the trace and
  its root span, by loading each pinned version with ``mlflow.genai.load_prompt`` inside
  the root span, as a user's own code would.

The registry is the tracking store (``observability.mlflow.tracking_uri``, or
MLFLOW_TRACKING_URI), unless MLFLOW_REGISTRY_URI names another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path as FilePath
from typing import Any

from agents_pipelines.errors import AgentsPipelinesError, ConfigIssue
from agents_pipelines.spec import Workflow, WorkflowSpec
from agents_pipelines.spec.findings import Path
from agents_pipelines.spec.prompt_refs import (
    from_mlflow,
    owner_of,
    pinned,
    registry_prompts,
    template_findings,
)
from agents_pipelines.tracking.tracking_settings import resolve_settings

__all__ = [
    "PinnedPrompt",
    "PromptPins",
    "PromptRegistryError",
    "Registered",
    "at_load",
    "link_prompts",
    "pin_prompts",
    "push_prompts",
    "versions_of",
]


class PromptRegistryError(AgentsPipelinesError):
    """A prompt the workflow names could not be read from the MLflow prompt registry."""


@dataclass(frozen=True)
class PinnedPrompt:
    """One registry prompt of a workflow, at the version a run uses."""

    path: Path  # ("nodes", 0, "prompt") or ("evals", 1, "judge")
    owner: str  # the node id or the eval name
    reference: str  # as the file writes it: prompts:/NAME@ALIAS or prompts:/NAME/VERSION
    name: str
    version: int
    template: str  # MLflow's syntax, {{var}}

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    @property
    def text(self) -> str:
        """The template in our syntax, {field}."""
        return from_mlflow(self.template)


@dataclass(frozen=True)
class PromptPins:
    """The registry prompts of one run at their pinned versions (none: no registry prompt)."""

    prompts: tuple[PinnedPrompt, ...] = ()

    def spec(self, spec: WorkflowSpec) -> WorkflowSpec:
        """``spec`` with each reference replaced by its pinned text: what the run executes."""
        return pinned(spec, {p.path: (p.uri, p.text) for p in self.prompts})

    def by_owner(self) -> dict[str, str]:
        """Node id (or eval name) -> the pinned version's URI."""
        return {p.owner: p.uri for p in self.prompts}

    def as_json(self) -> str:
        """The run config's and the checkpoints' record of the versions: by reference (a
        resumed attempt pins them again: ``versions_of``) and by node (the cassette's key)."""
        return json.dumps(
            {
                "versions": {p.reference: p.version for p in self.prompts},
                "nodes": self.by_owner(),
            },
            sort_keys=True,
        )


def versions_of(kept: str | None) -> dict[str, int]:
    """The versions a checkpoint kept (``PromptPins.as_json``), by reference; {} if none."""
    try:
        value = json.loads(kept) if kept else {}
    except ValueError:
        return {}
    versions = value.get("versions") if isinstance(value, dict) else None
    if not isinstance(versions, dict):
        return {}
    return {str(k): v for k, v in versions.items() if isinstance(v, int) and v > 0}


def pin_prompts(workflow: Workflow, kept: Mapping[str, int] | None = None) -> PromptPins:
    """The run's versions: ``kept`` ones (a resumed run's, by reference) as they are, each
    other alias resolved now. Raises PromptRegistryError naming the file, line and field."""
    refs = list(registry_prompts(workflow.spec))
    if not refs:
        return PromptPins()
    kept = kept or {}
    prompts = []
    for path, ref in refs:
        version = kept.get(ref.registry)
        uri = ref.registry if version is None else _versioned(ref.registry, version)
        try:
            prompt = _pinned(workflow.spec, path, ref.registry, _load(workflow, uri))
        except PromptRegistryError as exc:
            issue = workflow.issue((*path, "registry"), str(exc), _fix())
            raise PromptRegistryError(f"Workflow {workflow.name}: {issue}") from None
        for at, problem, fix in template_findings(workflow.spec, path, prompt.text, prompt.uri):
            hint = fix if isinstance(fix, str) else fix.text(search=True)
            issue = workflow.issue((*at, "registry"), problem, hint)
            raise PromptRegistryError(f"Workflow {workflow.name}: {issue}")
        prompts.append(prompt)
    return PromptPins(tuple(prompts))


def at_load(workflows: Iterable[Workflow]) -> tuple[list[Workflow], list[ConfigIssue]]:
    """The workflows with their registry prompts pinned at the versions named now (for the
    estimates shown at load; each run pins its own), and the problems: a prompt that cannot
    be read, or whose variables are not state fields. A workflow with problems is returned
    as it was."""
    loaded: list[Workflow] = []
    issues: list[ConfigIssue] = []
    for workflow in workflows:
        pins, found = _read(workflow)
        issues += found
        loaded.append(replace(workflow, spec=pins.spec(workflow.spec)) if not found else workflow)
    return loaded, issues


def _read(workflow: Workflow) -> tuple[PromptPins, list[ConfigIssue]]:
    prompts, issues = [], []
    for path, ref in registry_prompts(workflow.spec):
        try:
            prompt = _pinned(workflow.spec, path, ref.registry, _load(workflow, ref.registry))
        except PromptRegistryError as exc:
            issues.append(workflow.issue((*path, "registry"), str(exc), _fix()))
            continue
        prompts.append(prompt)
        for at, problem, fix in template_findings(workflow.spec, path, prompt.text, ref.registry):
            hint = fix if isinstance(fix, str) else fix.text(search=True)
            issues.append(workflow.issue((*at, "registry"), problem, hint))
    return PromptPins(tuple(prompts)), issues


def link_prompts(pins: PromptPins, run_id: str | None, tracking_uri: str) -> None:
    """Link the pinned versions to the MLflow run and, called inside the run's root span,
    to its trace (MLflow's trace tag ``mlflow.linkedPrompts`` and the span's attribute)."""
    if not pins.prompts:
        return
    import mlflow

    client = mlflow.MlflowClient(tracking_uri, registry_uri=_registry_uri(tracking_uri))
    for prompt in pins.prompts:
        version = mlflow.genai.load_prompt(prompt.uri, link_to_model=False)
        if run_id is not None:
            client.link_prompt_version_to_run(run_id, version)


def _client(workflow: Workflow) -> Any:
    import mlflow

    config = workflow.spec.config.observability.mlflow
    tracking_uri = resolve_settings(config, workflow.name).tracking_uri
    if (missing := _missing_sqlite_store(tracking_uri)) is not None:
        raise PromptRegistryError(missing)
    return mlflow.MlflowClient(tracking_uri, registry_uri=_registry_uri(tracking_uri))


def _registry_uri(tracking_uri: str) -> str:
    return os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri


def _missing_sqlite_store(uri: str) -> str | None:
    """Reading a registry must not create an empty store where a path is mistyped."""
    if not uri.startswith("sqlite:///"):
        return None
    file = FilePath(uri.removeprefix("sqlite:///"))
    if file.exists():
        return None
    return (
        f"the MLflow store {uri}, which holds the prompt registry, does not exist: no prompt "
        "can be read from it"
    )


def _load(workflow: Workflow, uri: str) -> Any:
    """The prompt version ``uri`` names; an alias read afresh (load_prompt would answer
    from MLflow's cache for 60 s after the alias moved)."""
    from mlflow.exceptions import MlflowException

    client = _client(workflow)
    name, _, alias = uri.removeprefix("prompts:/").partition("@")
    try:
        if alias:  # load_prompt reads an alias's version, then that version again: 2x
            loaded = client.get_prompt_version_by_alias(name, alias)
        else:  # immutable: MLflow's cache answers a version read before
            loaded = client.load_prompt(uri, allow_missing=True)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise PromptRegistryError(
                f"prompt {uri} is not in the MLflow prompt registry ({exc.message})"
            ) from None
        raise PromptRegistryError(
            f"the MLflow prompt registry could not be read for {uri}: {exc.message}"
        ) from None
    except Exception as exc:  # a server down, a store that is not one
        raise PromptRegistryError(
            f"the MLflow prompt registry could not be reached for {uri}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if loaded is None:
        raise PromptRegistryError(f"prompt {uri} is not in the MLflow prompt registry")
    return loaded


def _pinned(spec: WorkflowSpec, path: Path, reference: str, loaded: Any) -> PinnedPrompt:
    template = loaded.template
    if not isinstance(template, str):
        raise PromptRegistryError(
            f"prompt {loaded.uri} is a chat prompt (a list of messages); a node's `prompt` "
            "or a judge takes a text prompt: register the user message as text, and keep "
            "the system message in the node's `system`"
        )
    return PinnedPrompt(
        path, owner_of(spec, path), reference, loaded.name, int(loaded.version), template
    )


def _versioned(reference: str, version: int) -> str:
    name = reference.removeprefix("prompts:/").split("@")[0].split("/")[0]
    return f"prompts:/{name}/{version}"


def _fix() -> str:
    return (
        "register it (`agents-pipelines prompts push FILE`, or mlflow.genai.register_prompt), "
        "set the alias (mlflow.genai.set_prompt_alias), or check the name; the registry is "
        "the tracking store (observability.mlflow.tracking_uri or MLFLOW_TRACKING_URI)"
    )


@dataclass(frozen=True)
class Registered:
    """An inline prompt that ``push_prompts`` registered: where it was, and its reference."""

    path: Path
    name: str
    version: int
    reference: str  # prompts:/NAME@ALIAS with an alias, else prompts:/NAME/VERSION


def push_prompts(workflow: Workflow, alias: str | None = None) -> list[Registered]:
    """Register each inline node prompt and judge question of ``workflow`` as a new version
    of the prompt ``FLOW.NODE`` (``FLOW.eval.NAME`` for a judge), with ``mlflow.genai``'s
    ``register_prompt``; with ``alias``, point it at the new version."""
    from agents_pipelines.spec.prompt_refs import inline_prompts, prompt_name, to_mlflow

    client = _client(workflow)
    registered = []
    for path, owner, text in inline_prompts(workflow.spec):
        name = prompt_name(workflow.name, path, owner)
        version = client.register_prompt(
            name,
            to_mlflow(text),
            commit_message=f"agents-pipelines prompts push {workflow.path.name}",
            tags={"agents_pipelines.workflow": workflow.name, "agents_pipelines.node": owner},
        )
        if alias is not None:
            client.set_prompt_alias(name, alias, version.version)
        reference = f"prompts:/{name}@{alias}" if alias else version.uri
        registered.append(Registered(path, name, int(version.version), reference))
    return registered
