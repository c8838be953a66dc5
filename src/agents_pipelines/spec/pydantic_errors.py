"""Turn pydantic's validation errors into ConfigIssues that point at a line."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from agents_pipelines.errors import ConfigIssue
from agents_pipelines.spec.yaml_source import PathKey, YamlDocument


def issues_from_validation_error(
    doc: YamlDocument, error: ValidationError, root: type[BaseModel]
) -> list[ConfigIssue]:
    issues = []
    for err in error.errors(include_url=False):
        path = _document_path(doc.data, err["loc"])
        problem, fix = _describe(err, path, root)
        issues.append(doc.issue(path, problem, fix))
    return issues


def _document_path(data: Any, loc: tuple[Any, ...]) -> PathKey:
    """Keep the parts of pydantic's ``loc`` that exist in the document.

    pydantic inserts union-member tags (``str``, ``list[str]``...) into ``loc``; the user
    never wrote those, so they are dropped.
    """
    path: list[str | int] = []
    current = data
    for part in loc:
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and not path_is_tag(part):
            path.append(part)  # a missing key: point at its parent, name the key
            current = None
    return tuple(path)


def path_is_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def _describe(err: Any, path: PathKey, root: type[BaseModel]) -> tuple[str, str | None]:
    kind, msg = err["type"], err["msg"]
    key = path[-1] if path else ""
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, path[:-1])
        hint = _did_you_mean(str(key), allowed)
        fix = f"did you mean `{hint}`?" if hint else None
        if allowed and not hint:
            fix = "allowed keys here: " + ", ".join(f"`{k}`" for k in sorted(allowed))
        return f"unknown key `{key}`", fix
    if kind == "missing":
        return f"required key `{key}` is missing", f"add `{key}:`"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        hint = _did_you_mean(str(err.get("input")), options)
        fix = f"did you mean `{hint}`?" if hint else f"use one of: {expected}"
        return f"`{err.get('input')}` is not allowed here", fix
    if kind == "string_pattern_mismatch":
        return (
            f"`{err.get('input')}` is not a valid name",
            "use lower-case letters, digits and underscores, starting with a letter",
        )
    got = type(err.get("input")).__name__
    return f"{msg.rstrip('.')} (got {got})", None


def _did_you_mean(word: str, options: list[str] | set[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _allowed_keys(root: type[BaseModel], path: PathKey) -> set[str]:
    model: Any = root
    for part in path:
        if isinstance(part, int):
            continue  # list index: the element type is already unwrapped below
        field = _field(model, str(part))
        if field is None:
            return set()
        model = _model_in(field.annotation)
        if model is None:
            return set()
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return set()
    return {f.alias or name for name, f in model.model_fields.items()}


def _field(model: Any, key: str) -> Any:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as ``list[Node]`` or ``Node | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    args = typing.get_args(annotation)
    if origin is dict:
        args = args[1:]
    for arg in args:
        if (found := _model_in(arg)) is not None:
            return found
    return None
