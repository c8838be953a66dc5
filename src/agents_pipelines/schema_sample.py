"""Deterministic example values for a JSON schema, shared by the loopback Gemini server
and the simulated backend (standard library only, so either may import it).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaSampler", "schema_example"]

# Beyond this schema depth the example generator only emits what is required, so
# recursive schemas (trees, linked lists) terminate.
_OPTIONAL_DEPTH_LIMIT = 6
_HARD_DEPTH_LIMIT = 40


def schema_example(schema: Mapping[str, Any]) -> Any:
    """A deterministic JSON value that validates against ``schema``.

    Understands the JSON Schema subset that Pydantic and Gemini emit: objects
    (properties/required/additionalProperties), arrays (items/prefixItems/minItems/
    maxItems), scalars with bounds, formats and length limits, enum/const,
    anyOf/oneOf/allOf, ``$ref`` into ``$defs``/``definitions``, type lists, and Google's
    upper-case ``"STRING"``-style types. ``pattern`` and ``multipleOf`` are not honoured.
    """
    return SchemaSampler(schema).sample(schema, "value", 0, "")


class SchemaSampler:
    """Walks a schema and builds an example; holds the root so ``$ref`` can resolve.

    The walk is shared; the leaves are not. A subclass picks its own strings, numbers,
    booleans, enum members, array lengths and map keys by overriding ``string``,
    ``integer``, ``number``, ``boolean``, ``choice``, ``map_entry``, ``number_default`` and
    ``array_length``. This base answers the same for every request (the loopback server's
    predictable replies); the simulated backend varies them per request.
    """

    array_length = 2  # items in an array above the depth limit (minItems/maxItems permitting)
    number_default = 1.5  # a number's value when its bounds allow it

    def __init__(self, root: Mapping[str, Any]) -> None:
        self._root = root

    def sample(self, node: Any, name: str, depth: int, ordinal: str) -> Any:
        """Example for ``node``; ``name`` is the property and ``ordinal`` the array position
        (e.g. ``" 2"``), which keeps strings in different array items distinct."""
        if depth > _HARD_DEPTH_LIMIT:
            raise ValueError("schema nests too deeply (unsatisfiable recursion?)")
        if not isinstance(node, Mapping):  # `true` / `{}`-like schemas accept anything
            return self.string(name, ordinal, {})
        node = self._flatten(node)
        if "const" in node:
            return node["const"]
        if node.get("enum"):
            return self.choice(node["enum"], name)
        for key in ("anyOf", "oneOf"):
            if node.get(key):
                option = self._pick_option(node[key], depth)
                return self.sample(option, name, depth + 1, ordinal)
        kind = _schema_type(node)
        if kind == "object":
            return self._object(node, name, depth, ordinal)
        if kind == "array":
            return self._array(node, name, depth, ordinal)
        if kind == "integer":
            return self.integer(name, node)
        if kind == "number":
            return self.number(name, node)
        if kind == "boolean":
            return self.boolean(name)
        if kind == "null":
            return None
        return self.string(name, ordinal, node)

    def string(self, name: str, ordinal: str, node: Mapping[str, Any]) -> str:
        """A string for property ``name`` at array position ``ordinal``."""
        return _string_example(name + ordinal, node)

    def integer(self, name: str, node: Mapping[str, Any]) -> int:
        """150, or the nearest integer within the node's bounds."""
        return _integer_example(node)

    def number(self, name: str, node: Mapping[str, Any]) -> float:
        return _number_example(node, self.number_default)

    def boolean(self, name: str) -> bool:
        return True

    def array_count(self, node: Mapping[str, Any]) -> int:
        """Items in an array above the depth limit, before minItems/maxItems apply."""
        return self.array_length

    def choice(self, options: list[Any], name: str) -> Any:
        """The member of an ``enum`` to answer with."""
        return options[0]

    def map_entry(self, name: str, ordinal: str) -> tuple[str, str]:
        """The key of a map's one example entry, and the name its value is sampled as."""
        return f"{name}_key{ordinal.replace(' ', '_')}", f"{name}_key"

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref is supported, got {ref!r}")
        target: Any = self._root
        for token in ref[2:].split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        if not isinstance(target, Mapping):
            raise ValueError(f"$ref {ref!r} does not point at a schema object")
        return target

    def _flatten(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """Inline ``$ref`` and merge ``allOf`` so the rest only sees plain keywords."""
        merged = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
        parts: list[Mapping[str, Any]] = []
        if "$ref" in node:
            parts.append(self._resolve(node["$ref"]))
        parts.extend(node.get("allOf") or [])
        for part in parts:
            part = self._flatten(part)
            for key, value in part.items():
                if key == "properties":
                    merged["properties"] = {**value, **merged.get("properties", {})}
                elif key == "required":
                    merged["required"] = sorted({*value, *merged.get("required", [])})
                else:
                    merged.setdefault(key, value)
        return merged

    @staticmethod
    def _pick_option(options: list[Any], depth: int) -> Any:
        """Prefer a real value over ``null``, except deep down where null ends recursion."""
        non_null = [o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")]
        if depth >= _OPTIONAL_DEPTH_LIMIT and len(non_null) < len(options):
            return {"type": "null"}
        return non_null[0] if non_null else options[0]

    def _object(
        self, node: Mapping[str, Any], name: str, depth: int, ordinal: str
    ) -> dict[str, Any]:
        properties: Mapping[str, Any] = node.get("properties") or {}
        required = set(node.get("required") or [])
        order = node.get("propertyOrdering") or list(properties)
        shallow = depth < _OPTIONAL_DEPTH_LIMIT
        result = {
            key: self.sample(properties[key], key, depth + 1, ordinal)
            for key in order
            if key in properties and (shallow or key in required)
        }
        extra = node.get("additionalProperties")
        if not properties and isinstance(extra, Mapping) and shallow:
            # A map type (dict[str, X]): one entry shows the value shape.
            key, value_name = self.map_entry(name, ordinal)
            result[key] = self.sample(extra, value_name, depth + 1, ordinal)
        return result

    def _array(self, node: Mapping[str, Any], name: str, depth: int, ordinal: str) -> list[Any]:
        def position(i: int) -> str:  # " 1", " 2"; nested arrays give " 1.2"
            return f"{ordinal}.{i + 1}" if ordinal else f" {i + 1}"

        prefix = node.get("prefixItems")
        if prefix:
            return [self.sample(s, name, depth + 1, position(i)) for i, s in enumerate(prefix)]
        count = self.array_count(node) if depth < _OPTIONAL_DEPTH_LIMIT else 0
        count = max(count, int(node.get("minItems", 0)))
        if node.get("maxItems") is not None:
            count = min(count, int(node["maxItems"]))
        items = node.get("items", {})
        return [self.sample(items, name, depth + 1, position(i)) for i in range(count)]


def _schema_type(node: Mapping[str, Any]) -> str:
    """Normalize ``type`` (lists, Google's upper case) or infer it from keywords."""
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [str(k).lower() for k in kind]
        kind = next((k for k in kinds if k != "null"), "null")
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    return "string"


_FORMAT_EXAMPLES: dict[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "user@example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


def _string_example(name: str, node: Mapping[str, Any]) -> str:
    fmt = node.get("format")
    if fmt in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[fmt]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "value"
    if fmt in ("uri", "url", "uri-reference"):
        return f"https://example.com/{slug}"
    if fmt == "uuid":
        return str(uuid.uuid5(uuid.NAMESPACE_URL, slug))
    text = f"example {name}"
    min_len = int(node.get("minLength", 0))
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if node.get("maxLength") is not None:
        text = text[: int(node["maxLength"])]
    return text


def numeric_bounds(node: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_exclusive, high, high_exclusive) across JSON Schema drafts."""
    low, high = node.get("minimum"), node.get("maximum")
    low_excl = high_excl = False
    ex_min, ex_max = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if isinstance(ex_min, bool):  # draft 4 / OpenAPI: a flag on minimum
        low_excl = ex_min
    elif ex_min is not None:
        low, low_excl = ex_min, True
    if isinstance(ex_max, bool):
        high_excl = ex_max
    elif ex_max is not None:
        high, high_excl = ex_max, True
    return (
        None if low is None else float(low),
        low_excl,
        None if high is None else float(high),
        high_excl,
    )


def _integer_example(node: Mapping[str, Any]) -> int:
    low, low_excl, high, high_excl = numeric_bounds(node)
    value = 150
    if low is not None:
        value = max(value, math.floor(low) + 1 if low_excl else math.ceil(low))
    if high is not None:
        value = min(value, math.ceil(high) - 1 if high_excl else math.floor(high))
    return value


def _number_example(node: Mapping[str, Any], value: float) -> float:
    """``value`` if it is within the bounds, else a number that is."""
    low, low_excl, high, high_excl = numeric_bounds(node)

    def fits(v: float) -> bool:
        above = low is None or (v > low if low_excl else v >= low)
        below = high is None or (v < high if high_excl else v <= high)
        return above and below

    if fits(value):
        return value
    if low is not None and high is not None:
        return (low + high) / 2
    if low is not None:
        return low + 1.0
    assert high is not None  # fits() can only fail because of a bound
    return high - 1.0
