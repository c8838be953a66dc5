"""Refuse API keys written into workflow files. Keys come from GOOGLE_API_KEY."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from agents_pipelines.errors import ConfigIssue
from agents_pipelines.redaction import GOOGLE_KEY
from agents_pipelines.spec.yaml_source import PathKey, YamlDocument

_KEY_NAMES = re.compile(r"^(google_|gemini_)?api[_-]?key$", re.IGNORECASE)
_API = re.compile("api", re.IGNORECASE)  # in every match of _KEY_NAMES, with the same flags

_FIX = (
    "delete it from the file (and rotate the key if the file was shared); "
    "set GOOGLE_API_KEY in the environment instead"
)
_LITERAL = (
    "holds a literal Google API key (redacted here); API keys are not allowed in workflow files"
)


def find_literal_keys(doc: YamlDocument) -> list[ConfigIssue]:
    if not _may_hold_key(doc.text):
        return []
    issues = []
    for path, key, value in _walk(doc.data, ()):
        if key is not None and _KEY_NAMES.match(key):
            issues.append(_named_key(doc, path, key))
        elif key is not None and GOOGLE_KEY.search(key):
            issues.append(doc.issue(path, f"this key {_LITERAL}", _FIX))
        elif isinstance(value, str) and GOOGLE_KEY.search(value):
            issues.append(doc.issue(path, f"this value {_LITERAL}", _FIX))
    return issues


def _may_hold_key(text: str) -> bool:
    """Whether a key or value read from ``text`` could match either pattern: each match needs
    `api` (any case) or `AIza` in the text itself. YAML only joins text across lines with a
    separator, so just an escape (`\\x41`, a `\\` line end) can spell out what the text does not."""
    return "\\" in text or "AIza" in text or _API.search(text) is not None


def _named_key(doc: YamlDocument, path: PathKey, key: str) -> ConfigIssue:
    if path[:2] == ("state", "fields") and len(path) == 3:
        # A state field is not a setting, but its name reads like one: refuse it anyway,
        # so that no key ever flows into a prompt or a run's inputs under that name.
        return doc.issue(
            path,
            f"a state field may not be named `{key}`: API keys are not allowed in workflows",
            "rename the field; set GOOGLE_API_KEY in the environment for the key",
        )
    return doc.issue(path, "API keys are not allowed in workflow files", _FIX)


def _walk(data: Any, path: PathKey) -> Iterator[tuple[PathKey, str | None, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            child = (*path, key)
            yield child, str(key), value
            if isinstance(value, dict | list):
                yield from _walk(value, child)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield (*path, index), None, value
            if isinstance(value, dict | list):
                yield from _walk(value, (*path, index))
