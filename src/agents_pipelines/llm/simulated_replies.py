"""What the simulated backend answers: plausible, varied, and the same for the same request.

Every reply is drawn from a random generator seeded by a hash of the request (the messages,
the JSON schema, and the graph step), so a dry run repeats exactly, while different inputs
get different answers and take different routes:

- text: a ``[simulated MODEL] Re: <prompt head>.`` line, then ``reply_words`` words of
  sentences (the size drives the token count, and so the cost estimate);
- strings in a structured reply: ``Simulated <field>: `` and twelve words;
- integers: 0 to 100, floats: 0.00 to 1.00, both within the schema's bounds;
- booleans: true or false, even odds; an ``enum`` (a field's choices): any of its members;
- lists: one to four items (distinct members for a list of choices).

Hints from the workflow (graph.dry_run) narrow this: numbers stay within the checks' bounds,
strings within their lengths; a number that routes compare with a threshold lands in each
piece the thresholds cut (or on a threshold) at even odds, and a string that routes compare
with values is one of them, or free text, at even odds.

The step is part of the seed because a review loop asks the same question again: a model
with a temperature may answer otherwise the second time, and so does this one, so a loop
ends instead of running into ``max_steps``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Mapping
from typing import Any

from agents_pipelines.schema_sample import SchemaSampler, numeric_bounds

__all__ = [
    "ROUTE_THRESHOLDS",
    "ROUTE_VALUES",
    "FieldHints",
    "request_seed",
    "structured_reply",
    "text_reply",
]

# What a dry run should know about each output field (graph.dry_run builds it): the checks'
# bounds as JSON Schema keywords, and the values routes compare it with,
# e.g. {"score": {"maximum": 10, "x-route-thresholds": [8]}}.
FieldHints = Mapping[str, Mapping[str, Any]]
ROUTE_VALUES = "x-route-values"  # compared with equals, not_equals, in, contains
ROUTE_THRESHOLDS = "x-route-thresholds"  # compared with gt, gte, lt, lte

_INT_RANGE = (0, 100)
_FLOAT_RANGE = (0.0, 1.0)
_STRING_WORDS = 12
_VOCABULARY = (
    *("the", "a", "this", "our", "each", "every", "its", "their", "we", "you", "it"),
    *("team", "customer", "report", "release", "account", "order", "plan", "review"),
    *("pipeline", "workflow", "result", "summary", "update", "issue", "change", "data"),
    *("shows", "needs", "covers", "keeps", "adds", "checks", "explains", "follows"),
    *("improves", "describes", "includes", "confirms", "suggests", "tracks", "lists"),
    *("clear", "new", "short", "main", "current", "useful", "simple", "careful", "weekly"),
    *("and", "with", "for", "from", "about", "before", "after", "so", "while", "when"),
    *("quickly", "well", "today", "again", "mostly", "also", "now", "then"),
)


def request_seed(messages: list[tuple[str, str]], schema: Any, step: Any) -> int:
    """A stable seed from (role, text) pairs, the response schema and the graph step."""
    payload = json.dumps([messages, schema, step], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")


def text_reply(model: str, prompt: str, seed: int, words: int, hints: FieldHints) -> str:
    """A plain-text answer. ``hints`` (for the node's one output) may set its minLength and
    maxLength, and list route values: a reply then opens with one of them, or not, at even
    odds, so that a `contains` route goes both ways."""
    rng = random.Random(seed)
    head = " ".join(prompt.split())[:80]
    (hint,) = hints.values() if len(hints) == 1 else ({},)
    opening = _maybe(rng, [v for v in hint.get(ROUTE_VALUES, ()) if isinstance(v, str)])
    body = _sentences(rng, words)
    text = f"[simulated {model}] Re: {head}. " + (f"{opening}. {body}" if opening else body)
    return _fit_length(rng, text, hint)


def structured_reply(schema: Mapping[str, Any], seed: int, hints: FieldHints) -> str:
    """A JSON answer fitting ``schema``, with ``hints`` added to its top-level properties."""
    schema = _with_hints(schema, hints)
    return json.dumps(_SimulatedSampler(schema, random.Random(seed)).sample(schema, "value", 0, ""))


class _SimulatedSampler(SchemaSampler):
    """The schema walk of the loopback server, with seeded leaves."""

    number_default = 0.5

    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        super().__init__(root)
        self._rng = rng

    def string(self, name: str, ordinal: str, node: Mapping[str, Any]) -> str:
        routed = _maybe(self._rng, [v for v in node.get(ROUTE_VALUES, ()) if isinstance(v, str)])
        words = " ".join(self._rng.choice(_VOCABULARY) for _ in range(_STRING_WORDS))
        text = routed or f"Simulated {name.replace('_', ' ')}: {words}"
        return _fit_length(self._rng, text, node)

    def integer(self, name: str, node: Mapping[str, Any]) -> int:
        low, high = _range(node, _INT_RANGE, integer=True)
        if low > high:  # contradicting bounds: the lower one wins
            return math.ceil(low)
        low, high = self._span(math.ceil(low), math.floor(high), node, integer=True)
        return self._rng.randint(math.ceil(low), math.floor(high))

    def number(self, name: str, node: Mapping[str, Any]) -> float:
        low, high = _range(node, _FLOAT_RANGE, integer=False)
        low, high = self._span(low, high, node, integer=False)
        value = round(self._rng.uniform(low, high), 2)
        return value if _fits(node, value) else (low + high) / 2

    def _span(
        self, low: float, high: float, node: Mapping[str, Any], *, integer: bool
    ) -> tuple[float, float]:
        """The piece of the range, between route thresholds, that the value falls in, each
        at even odds; a value that a route tests for equality is a piece of its own."""
        points = {float(v) for v in node.get(ROUTE_VALUES, ()) if _is_number(v)}
        cuts = {float(v) for v in node.get(ROUTE_THRESHOLDS, ()) if _is_number(v)} | points
        edges = [low, *sorted(c for c in cuts if low < c < high), high]
        pieces = list(itertools.pairwise(edges))
        if integer:  # [a, b) but for the last piece, so `gte: 8` splits 0-7 from 8-100
            pieces = [(a, b - 1 if i < len(pieces) - 1 else b) for i, (a, b) in enumerate(pieces)]
            pieces = [(a, b) for a, b in pieces if math.ceil(a) <= math.floor(b)]
        pieces += [(p, p) for p in points if low <= p <= high and (p.is_integer() or not integer)]
        return self._rng.choice(pieces) if pieces else (low, high)

    def boolean(self, name: str) -> bool:
        return self._rng.random() < 0.5

    def choice(self, options: list[Any], name: str) -> Any:
        return self._rng.choice(options)

    def array_count(self, node: Mapping[str, Any], limit: int = 4) -> int:
        """One to ``limit`` items, within minItems and maxItems."""
        low = max(int(node.get("minItems", 0)), 1)
        high = max(limit, low)
        if node.get("maxItems") is not None:
            high = min(high, int(node["maxItems"]))
        return self._rng.randint(min(low, high), high)

    def map_entry(self, name: str, ordinal: str) -> tuple[str, str]:
        return "key", name

    def _array(self, node: Mapping[str, Any], name: str, depth: int, ordinal: str) -> list[Any]:
        items = node.get("items")
        members = self._flatten(items).get("enum") if isinstance(items, Mapping) else None
        if members and not node.get("prefixItems"):  # a list of labels: distinct labels
            count = self.array_count(node, len(members))
            if count <= len(members):
                return self._rng.sample(list(members), count)
        return super()._array(node, name, depth, ordinal)


def _range(
    node: Mapping[str, Any], default: tuple[float, float], *, integer: bool
) -> tuple[float, float]:
    """The default range narrowed to the node's bounds. A bound at or past the far end of
    the default range gets half its width on the open side (`min: 100` gives 100 to 150);
    two bounds mostly outside it are the range (`min: 1, max: 5` on a float: 1 to 5)."""
    low, low_excl, high, high_excl = numeric_bounds(node)
    step = 1.0 if integer else 0.01
    if low is not None and low_excl:
        low += step
    if high is not None and high_excl:
        high -= step
    lo = default[0] if low is None else max(default[0], low)
    hi = default[1] if high is None else min(default[1], high)
    half = (default[1] - default[0]) / 2
    if low is not None and high is not None:
        if hi - lo < (high - low) / 2:  # most of the bounds lie outside the default range
            lo, hi = low, high
    elif low is not None and lo >= hi:
        hi = lo + half
    elif high is not None and lo >= hi:
        lo = hi - half
    return lo, hi


def _fits(node: Mapping[str, Any], value: float) -> bool:
    low, low_excl, high, high_excl = numeric_bounds(node)
    above = low is None or (value > low if low_excl else value >= low)
    below = high is None or (value < high if high_excl else value <= high)
    return above and below


def _sentences(rng: random.Random, words: int) -> str:
    out: list[str] = []
    while len(out) < words:
        size = min(rng.randint(6, 14), words - len(out))
        sentence = [rng.choice(_VOCABULARY) for _ in range(size)]
        sentence[0] = sentence[0].capitalize()
        sentence[-1] += "."
        out += sentence
    return " ".join(out)


def _fit_length(rng: random.Random, text: str, node: Mapping[str, Any]) -> str:
    """Cut to ``maxLength``, then pad with words to ``minLength`` (which wins when the two
    contradict, as the lower bound does for numbers)."""
    if node.get("maxLength") is not None:
        text = text[: int(node["maxLength"])]
    while len(text) < int(node.get("minLength", 0)):
        text += " " + rng.choice(_VOCABULARY)
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _maybe(rng: random.Random, values: list[str]) -> str | None:
    """One of ``values``, or None (free text), each at even odds."""
    return rng.choice([*values, None]) if values else None


def _with_hints(schema: Mapping[str, Any], hints: FieldHints) -> Mapping[str, Any]:
    properties = schema.get("properties")
    if not hints or not isinstance(properties, Mapping):
        return schema
    merged = {
        name: {**prop, **hints.get(name, {})} if isinstance(prop, Mapping) else prop
        for name, prop in properties.items()
    }
    return {**schema, "properties": merged}
