"""Refuse API keys written into workflow files. Keys come from GOOGLE_API_KEY."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from agents_pipelines.errors import ConfigIssue
from agents_pipelines.spec.yaml_source import PathKey, YamlDocument

# Google API keys are "AIza" plus 35 URL-safe characters.
_GOOGLE_KEY = re.compile(r"AIza[0-9A-Za-z_\-]{35}")
_KEY_NAMES = re.compile(r"^(google_|gemini_)?api[_-]?key$", re.IGNORECASE)

_FIX = (
    "delete it from the file (and rotate the key if the file was shared); "
    "set GOOGLE_API_KEY in the environment instead"
)


def find_literal_keys(doc: YamlDocument) -> list[ConfigIssue]:
    issues = []
    for path, key, value in _walk(doc.data, ()):
        if key is not None and _KEY_NAMES.match(key):
            issues.append(doc.issue(path, "API keys are not allowed in workflow files", _FIX))
        elif isinstance(value, str) and _GOOGLE_KEY.search(value):
            issues.append(
                doc.issue(
                    path,
                    "this value holds a literal Google API key (redacted here); "
                    "API keys are not allowed in workflow files",
                    _FIX,
                )
            )
    return issues


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
