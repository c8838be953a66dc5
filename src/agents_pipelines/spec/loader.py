"""Load workflow files: YAML text → a validated WorkflowSpec, or every problem found."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from agents_pipelines.errors import ConfigIssue, WorkflowConfigError
from agents_pipelines.spec.dependency_rules import dependency_issues
from agents_pipelines.spec.models import WorkflowSpec
from agents_pipelines.spec.pydantic_errors import issues_from_validation_error
from agents_pipelines.spec.python_refs import code_sha256
from agents_pipelines.spec.ref_probe import probing
from agents_pipelines.spec.rules import run_checks
from agents_pipelines.spec.secrets import find_literal_keys
from agents_pipelines.spec.yaml_source import PathKey, YamlDocument, parse_yaml, read_yaml

WORKFLOW_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Workflow:
    """A validated workflow and the file it came from."""

    spec: WorkflowSpec
    path: Path
    text: str
    sha256: str
    positions: dict[PathKey, tuple[int, int]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def name(self) -> str:
        return self.spec.flow.name

    def version_sha256(self) -> str:
        """The file's digest, and that of the Python its steps and tools name (read now):
        a change to either is another version (resume, Dagster's code version)."""
        refs = [ref for node in self.spec.nodes for ref in (*node.tools, node.function) if ref]
        code = code_sha256(refs)
        if code is None:  # YAML only: the file's digest, as before Python steps existed
            return self.sha256
        return hashlib.sha256(f"{self.sha256}\n{code}".encode()).hexdigest()

    def issue(self, path: PathKey, problem: str, fix: str | None = None) -> ConfigIssue:
        """A ConfigIssue located in this workflow's file."""
        return YamlDocument(str(self.path), self.text, None, self.positions).issue(
            path, problem, fix
        )


def load_workflow(path: str | Path) -> Workflow:
    """Load and validate one file. Raises WorkflowConfigError listing every problem."""
    path = Path(path)
    return _validate(read_yaml(path), path)


def load_workflow_text(text: str, file: str = "<string>") -> Workflow:
    """Load a workflow from text, as if read from ``file`` (handy in tests and notebooks)."""
    return _validate(parse_yaml(text.encode("utf-8"), file), Path(file))


def _validate(doc: YamlDocument, path: Path) -> Workflow:
    issues = find_literal_keys(doc)
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        issues.append(
            doc.issue(
                (),
                f"the file must hold a mapping, got {kind}",
                "start from an example in workflows/",
            )
        )
        raise WorkflowConfigError(issues)
    try:
        spec = WorkflowSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise WorkflowConfigError(
            issues + issues_from_validation_error(doc, exc, WorkflowSpec)
        ) from None
    issues += [doc.issue(p, problem, fix) for p, problem, fix in run_checks(spec)]
    if issues:
        raise WorkflowConfigError(issues)
    digest = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
    return Workflow(spec, path, doc.text, digest, doc.positions)


def workflow_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories to the workflow files they hold (not recursive), sorted."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix in WORKFLOW_SUFFIXES)
        else:
            found.append(item)
    return found


def load_workflows(paths: Iterable[str | Path]) -> tuple[list[Workflow], list[ConfigIssue]]:
    """Load every file; return the valid workflows and the problems of the rest.

    Two files that claim the same flow name are both reported: an asset key is unique.
    """
    workflows: list[Workflow] = []
    issues: list[ConfigIssue] = []
    with probing():  # one child process imports the Python that all the files name
        for path in workflow_files(paths):
            try:
                workflows.append(load_workflow(path))
            except WorkflowConfigError as exc:
                issues += exc.issues
    seen: dict[str, Workflow] = {}
    for workflow in workflows:
        if (other := seen.setdefault(workflow.name, workflow)) is not workflow:
            issues.append(
                workflow.issue(
                    ("flow", "name"),
                    f"flow name `{workflow.name}` is also used by {other.path}",
                    "give each workflow its own flow.name (it is the asset key)",
                )
            )
    issues += dependency_issues(workflows)
    return workflows, issues
