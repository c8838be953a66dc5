"""Turn pydantic's validation errors into ConfigIssues that point at a line.

One mistake gives one issue with a fix. pydantic reports a value that fits no member of a
union once per member (`from: 7` is neither a str nor a list[str]); those errors are
merged by the document path they point at.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from agents_pipelines.errors import ConfigIssue
from agents_pipelines.spec.yaml_source import PathKey, YamlDocument

_SCALAR_TAGS = ("str", "int", "float", "bool", "constrained-str")
# What each type error asks for: (as one of several union members, alone in a fix).
_WANTED = {
    "string_type": ("text", "text"),
    "int_type": ("a whole number", "a whole number, e.g. 3"),
    "int_parsing": ("a whole number", "a whole number, e.g. 3"),
    "int_from_float": ("a whole number", "a whole number, e.g. 3"),
    "float_type": ("a number", "a number, e.g. 0.5"),
    "float_parsing": ("a number", "a number, e.g. 0.5"),
    "bool_type": ("a boolean", "true or false"),
    "bool_parsing": ("a boolean", "true or false"),
    "list_type": ("a list", "a list, e.g. [a, b]"),
    "dict_type": ("a mapping", "a mapping, e.g. {key: value}"),
    "model_type": ("a mapping", "a mapping of keys"),
    "model_attributes_type": ("a mapping", "a mapping of keys"),
}
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_BOUND_TYPES = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)
_FALLBACK_FIX = "check the value against schema/workflow.schema.json"


@dataclass(frozen=True)
class _Error:
    path: PathKey  # where it stands in the document
    union: bool  # reported for one member of a union
    details: ErrorDetails

    @property
    def mismatch(self) -> bool:
        """The value is not of the member's type at all (rather than out of range...).

        Text that is not one of a Literal's options is of the right type: `eagr` meant
        `eager`, not a mapping.
        """
        kind = self.details["type"]
        if kind == "literal_error":
            return not isinstance(self.details.get("input"), str)
        return kind in _WANTED or kind.endswith("_type")


def issues_from_validation_error(
    doc: YamlDocument, error: ValidationError, root: type[BaseModel]
) -> list[ConfigIssue]:
    errors = []
    for details in error.errors(include_url=False):
        path, union = _document_path(doc.data, details["loc"])
        errors.append(_Error(path, union, details))
    groups: dict[PathKey, list[_Error]] = {}
    for err in _relevant(errors):
        groups.setdefault(err.path, []).append(err)
    return [doc.issue(path, *_merge(group, root)) for path, group in groups.items()]


def _document_path(data: Any, loc: tuple[Any, ...]) -> tuple[PathKey, bool]:
    """Keep the parts of pydantic's ``loc`` that exist in the document.

    pydantic inserts union-member tags (``str``, ``list[str]``, ``OnCron``...) and
    ``[key]`` into ``loc``; the user never wrote those, so they are dropped. Also says
    whether a union tag was among them.
    """
    path: list[str | int] = []
    union = False
    current = data
    for part in loc:
        in_dict = isinstance(current, dict) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and part < len(current)
        if in_dict or in_list:
            path.append(part)
            current = current[part]
        elif path_is_tag(part):
            union = union or part != "[key]"
        elif isinstance(current, dict):
            path.append(part)  # a missing key: point at its parent, name the key
            current = None
    return tuple(path), union


def path_is_tag(part: Any) -> bool:
    return isinstance(part, str) and (
        part in _SCALAR_TAGS or "[" in part or part[:1].isupper()  # class names: OnCron
    )


def _relevant(errors: list[_Error]) -> list[_Error]:
    """Drop the errors that only repeat what another error says better.

    `from: [7]` fails both as a str (at `from`) and inside the list (at `from[0]`): the
    list member is the one the user wrote. `from: []` is a list, only too short. And a
    misspelt `promt:` is both an unknown key and a missing `prompt`: one mistake.
    """
    union = [err for err in errors if err.union]
    under = {err.path[:end] for err in union for end in range(len(err.path))}
    valued = {err.path for err in union if not err.mismatch}
    unknown: dict[PathKey, list[str]] = {}
    for err in errors:
        if err.details["type"] == "extra_forbidden":
            unknown.setdefault(err.path[:-1], []).append(str(err.path[-1]))
    kept = []
    for err in errors:
        if err.union and err.mismatch and (err.path in under or err.path in valued):
            continue
        key = str(err.path[-1]) if err.path else ""
        misspelt = any(_did_you_mean(k, [key]) for k in unknown.get(err.path[:-1], []))
        if err.details["type"] == "missing" and misspelt:
            continue
        kept.append(err)
    return kept


def _merge(group: list[_Error], root: type[BaseModel]) -> tuple[str, str]:
    """One issue for the errors at one path (several only from the members of a union)."""
    if len(group) > 1 and all(err.details["type"] in _WANTED for err in group):
        return _fits_no_member(group)
    described = [_describe(err.details, err.path, root) for err in group]
    problems = dict.fromkeys(problem for problem, _ in described)
    fixes = dict.fromkeys(fix for _, fix in described)
    return "; or ".join(problems), "; or ".join(fixes)


def _fits_no_member(group: list[_Error]) -> tuple[str, str]:
    """`Input should be a valid string or a valid list (got int)`, with one fix."""
    messages = [err.details["msg"].removeprefix("Input should be ") for err in group]
    wanted = [_WANTED[err.details["type"]][0] for err in group]
    problem = "Input should be " + _one_of([m.split(" or instance of ")[0] for m in messages])
    return problem + _got(group[0].details), "use " + _one_of(wanted)


def _one_of(options: list[str]) -> str:
    unique = list(dict.fromkeys(options))
    return ", ".join(unique[:-1]) + " or " + unique[-1] if len(unique) > 1 else unique[0]


def _describe(err: ErrorDetails, path: PathKey, root: type[BaseModel]) -> tuple[str, str]:
    kind, msg = err["type"], err["msg"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    key = path[-1] if path else ""
    if kind == "extra_forbidden":
        return _unknown_key(str(key), _model_keys(root, path[:-1]))
    if kind == "missing":
        return f"required key `{key}` is missing", f"add `{key}:`"
    if kind == "literal_error":
        return _not_allowed(err, str(key))
    if kind == "string_pattern_mismatch" and key == "registry":
        return (
            f"`{err.get('input')}` is not a prompt URI of the MLflow prompt registry",
            'write "prompts:/NAME@ALIAS" (e.g. @production) or "prompts:/NAME/VERSION"',
        )
    if kind == "string_pattern_mismatch":
        return (
            f"`{err.get('input')}` is not a valid name",
            "use lower-case letters, digits and underscores, starting with a letter",
        )
    if kind == "workflow_rule":
        return msg, str(ctx.get("fix") or _FALLBACK_FIX)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{msg} (got {err.get('input')!r})", _range_fix(root, path, ctx)
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return msg.replace(" after validation", ""), _length_fix(kind, ctx)
    if kind in _WANTED:
        return msg.split(" or instance of ")[0] + _got(err), _type_fix(err, root, path)
    return msg.removeprefix("Value error, ").rstrip("."), _FALLBACK_FIX


def _got(err: ErrorDetails) -> str:
    value = err.get("input")
    return " (got null)" if value is None else f" (got {type(value).__name__})"


def _unknown_key(key: str, allowed: list[str]) -> tuple[str, str]:
    hint = _did_you_mean(key, allowed)
    if hint:
        return f"unknown key `{key}`", f"did you mean `{hint}`?"
    if allowed:
        return f"unknown key `{key}`", "allowed keys here: " + ", ".join(
            f"`{k}`" for k in sorted(allowed)
        )
    return f"unknown key `{key}`", "remove it"


def _not_allowed(err: ErrorDetails, key: str) -> tuple[str, str]:
    value = err.get("input")
    expected = str((err.get("ctx") or {}).get("expected", ""))
    options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip()]
    if not isinstance(value, str) and str(value) in options:
        # `schema_version: 1` is the number 1; the format wants the text "1".
        kind = "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"
        return f'`{value}` is {kind} here, not the text "{value}"', f'quote it: `{key}: "{value}"`'
    hint = _did_you_mean(str(value), options)
    fix = f"did you mean `{hint}`?" if hint else f"use one of: {expected}"
    return f"`{value}` is not allowed here", fix


def _type_fix(err: ErrorDetails, root: type[BaseModel], path: PathKey) -> str:
    kind, value = err["type"], err.get("input")
    if kind == "string_type" and isinstance(value, dict | list):
        return "use a single text value, not a " + (
            "list" if isinstance(value, list) else "mapping"
        )
    if kind == "string_type":
        return (
            "quote it (YAML reads unquoted numbers, true/false, yes/no, null and dates as non-text)"
        )
    if kind in ("model_type", "model_attributes_type") and (keys := _model_keys(root, path)):
        return "use a mapping with these keys: " + ", ".join(f"`{k}`" for k in keys)
    return "use " + _WANTED[kind][1]


def _range_fix(root: type[BaseModel], path: PathKey, ctx: dict[str, Any]) -> str:
    """Both bounds of the field (pydantic's ctx names only the one that was crossed)."""
    _, field = _walk(root, path)
    metadata = field.metadata if field is not None else []
    bounds = {
        name: getattr(m, name)
        for m in metadata
        if isinstance(m, _BOUND_TYPES)
        for name in _BOUNDS
        if hasattr(m, name)
    } or {name: value for name, value in ctx.items() if name in _BOUNDS}
    whole = field is not None and not _allows(field.annotation, float)
    noun = "a whole number" if whole else "a number"
    if "ge" in bounds and "le" in bounds:
        return f"use {noun} between {bounds['ge']} and {bounds['le']}"
    return f"use {noun} " + " and ".join(f"{_BOUNDS[n]} {v}" for n, v in bounds.items())


def _length_fix(kind: str, ctx: dict[str, Any]) -> str:
    if kind == "string_too_short":
        return "write at least " + _count(ctx.get("min_length", 1), "character")
    if kind == "string_too_long":
        return "shorten it to at most " + _count(ctx.get("max_length", 0), "character")
    item = "entry" if ctx.get("field_type") == "Dictionary" else "item"
    if kind == "too_short":
        return "give at least " + _count(ctx.get("min_length", 1), item)
    return "give at most " + _count(ctx.get("max_length", 0), item)


def _count(n: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {noun if n == 1 else plural}"


def _did_you_mean(word: str, options: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _model_keys(root: type[BaseModel], path: PathKey) -> list[str]:
    """The keys the model at ``path`` takes, in declaration order; [] if none stands there."""
    model, _ = _walk(root, path)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _walk(root: type[BaseModel], path: PathKey) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model standing at ``path`` (None inside a dict or scalar) and the last field.

    A dict-typed field (``state.fields``, ``config.pricing``) is followed by the user's
    own key, which names no field: it is stepped over.
    """
    model: type[BaseModel] | None = root
    field: FieldInfo | None = None
    user_key = False
    for part in path:
        if isinstance(part, int):
            continue  # list index: the element type is already unwrapped below
        if user_key:
            user_key = False
            continue
        field = _field(model, str(part))
        if field is None:
            return None, None
        model = _model_in(field.annotation)
        user_key = _allows(field.annotation, dict)
    return (None if user_key else model), field


def _field(model: Any, key: str) -> FieldInfo | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _allows(annotation: Any, kind: type) -> bool:
    """Whether ``annotation`` is ``kind`` (e.g. dict, int), alone or in a union/Annotated."""
    if annotation is kind or typing.get_origin(annotation) is kind:
        return True
    return any(_allows(arg, kind) for arg in _members(annotation))


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return typing.get_args(annotation)
    if origin is typing.Annotated:
        return typing.get_args(annotation)[:1]
    return ()


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
