"""Where two JSON documents differ, by path, shown short enough for an error message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["ABSENT", "Difference", "differences"]

ABSENT: Any = object()  # a key one side does not have, or a list item past its end
_CONTEXT = 30  # characters shown before the first differing one
_SHOWN = 80  # characters shown of a value in all


@dataclass(frozen=True)
class Difference:
    path: str  # "contents[0].parts[0].text"; "" for the whole document
    recorded: Any
    current: Any

    def __str__(self) -> str:
        recorded, current = _shown_pair(self.recorded, self.current)
        return f"{self.path or '(the whole request)'}: recorded {recorded}, now {current}"


def differences(recorded: Any, current: Any, path: str = "") -> list[Difference]:
    """Every leaf where ``current`` differs from ``recorded``, in document order."""
    if isinstance(recorded, dict) and isinstance(current, dict):
        found: list[Difference] = []
        for key in [*recorded, *(k for k in current if k not in recorded)]:
            sub = f"{path}.{key}" if path else str(key)
            found += differences(recorded.get(key, ABSENT), current.get(key, ABSENT), sub)
        return found
    if isinstance(recorded, list) and isinstance(current, list):
        found = []
        for index in range(max(len(recorded), len(current))):
            left = recorded[index] if index < len(recorded) else ABSENT
            right = current[index] if index < len(current) else ABSENT
            found += differences(left, right, f"{path}[{index}]")
        return found
    if recorded is ABSENT and current is ABSENT:
        return []
    if type(recorded) is type(current) and recorded == current:
        return []
    return [Difference(path, recorded, current)]


def _shown_pair(recorded: Any, current: Any) -> tuple[str, str]:
    """Two strings are shown from a little before their first difference on."""
    if isinstance(recorded, str) and isinstance(current, str):
        common = 0
        for a, b in zip(recorded, current, strict=False):
            if a != b:
                break
            common += 1
        start = max(0, common - _CONTEXT)
        return _window(recorded, start), _window(current, start)
    return _shown(recorded), _shown(current)


def _window(text: str, start: int) -> str:
    shown = json.dumps(text[start : start + _SHOWN], ensure_ascii=False)
    head = "…" if start else ""
    tail = "…" if len(text) > start + _SHOWN else ""
    return head + shown + tail


def _shown(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
