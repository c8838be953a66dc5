"""A fast path for reading workflow files: libyaml's event stream, built without recursion.

``yaml_source``'s pure-Python reader is the reference and gives every error message. This
path takes only the plain YAML that workflow files are made of, and gives back exactly
the values and positions the reference would. For anything else (anchors, aliases, tags,
merge keys, directives, tabs, unusual line breaks, a document too deep or too large) and
for any error, it returns None and the caller runs the reference reader, so messages and
limits stay the same. libyaml and PyYAML disagree on a few inputs (``[what?]`` parses in
libyaml only): each such construct is in the list above or is turned away below.

The events are consumed in a loop with an explicit stack, so no nesting depth can
overflow the C stack, as libyaml's own recursive composer can.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_CLoader: Any = getattr(yaml, "CSafeLoader", None)
_TAG = "tag:yaml.org,2002:"
_STR = _TAG + "str"
_TEXT_TAGS = frozenset({_STR, _TAG + "value", _TAG + "merge"})
_CONSTRUCTORS = {
    _TAG + t: yaml.SafeLoader.yaml_constructors[_TAG + t]
    for t in ("int", "float", "bool", "null", "timestamp")
}
# What the reference reader refuses (control characters), and characters where the two
# readers count lines or skip whitespace differently: tabs, BOMs, Unicode line breaks.
_UNSAFE_TEXT = re.compile(yaml.reader.Reader.NON_PRINTABLE.pattern + "|[\t\x85\ufeff\u2028\u2029]")
# A block scalar's header as PyYAML reads it: `|` or `>`, indicators, then a comment or nothing.
_BLOCK_STYLES = frozenset("|>")
_BLOCK_HEADER = re.compile(r"[|>](?:[+-][1-9]?|[1-9][+-]?)?(?: +(?:#[^\r\n]*)?)?(?:\r|\n|\Z)")
_END_EVENTS = frozenset({yaml.MappingEndEvent, yaml.SequenceEndEvent})
_NODE_EVENTS = frozenset({yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent})
_MAX_KEY = 1000  # both readers limit an implicit key to 1,024 characters, counted apart


PathKey = tuple[str | int, ...]
Positions = dict[PathKey, tuple[int, int]]


class _Unsupported(Exception):
    """The file needs the reference reader."""


def compose(text: str, max_depth: int, max_values: int) -> tuple[Any, Positions] | None:
    """(data, positions) as the reference reader builds them, or None to use it instead."""
    if _CLoader is None or yaml.SafeLoader.yaml_path_resolvers or _UNSAFE_TEXT.search(text):
        return None
    loader = _CLoader(text)
    try:
        return _Builder(loader, text, max_depth, max_values).document()
    except Exception:  # any doubt: the reference reader decides, and explains
        return None
    finally:
        loader.dispose()


class _Builder:
    def __init__(self, loader: Any, text: str, max_depth: int, max_values: int):
        self.get = loader.get_event
        self.loader = loader
        self.text = text
        self.max_depth = max_depth
        self.max_values = max_values
        self.positions: Positions = {}
        self.resolvers = yaml.SafeLoader.yaml_implicit_resolvers
        self.wildcard = self.resolvers.get(None, [])
        self.tags: dict[str, str] = {}  # plain scalar → its tag (keys repeat a lot)

    def document(self) -> tuple[Any, Positions]:
        _expect(self.get(), yaml.StreamStartEvent)
        start = _expect(self.get(), yaml.DocumentStartEvent)  # an empty file has none
        if start.version is not None or start.tags is not None:
            raise _Unsupported
        data = self._read()
        _expect(self.get(), yaml.DocumentEndEvent)
        _expect(self.get(), yaml.StreamEndEvent)  # a second document is an error
        return data, self.positions

    def _read(self) -> Any:
        """The root value, read in one loop over the events (the hot path: few calls).

        As in the reference, every value counts towards max_values, and a mapping value's
        position is its key's. A collection at max_depth is left to the reference.
        """
        get, positions, count = self.get, self.positions, 0
        stack: list[tuple[Any, PathKey, str | None, bool]] = []  # the enclosing collections
        container: Any = None  # the open collection (None: at the root)
        path: PathKey = ()  # the open collection's path
        key: str | None = None  # in a mapping, the key whose value comes next
        flow = False  # inside [...] or {...}
        while True:
            event = get()
            kind = type(event)
            if kind in _END_EVENTS:
                value = container
                if not stack:
                    return value
                container, path, key, flow = stack.pop()
            elif kind not in _NODE_EVENTS or event.anchor is not None or event.tag is not None:
                raise _Unsupported  # an alias, an anchor or a tag
            else:
                mark = event.start_mark
                if key is None and type(container) is dict:
                    key = self._key(event, container, flow)
                    positions[(*path, key)] = (mark.line + 1, mark.column + 1)
                    continue
                count += 1
                if count > self.max_values:
                    raise _Unsupported
                if container is None:
                    child: PathKey = ()
                else:
                    child = (*path, len(container) if key is None else key)
                if key is None:
                    if kind is yaml.ScalarEvent and _is_missing(event):
                        raise _Unsupported
                    positions[child] = (mark.line + 1, mark.column + 1)
                if kind is yaml.ScalarEvent:
                    value = self._scalar(event, flow)
                    if container is None:
                        return value
                else:
                    if len(child) >= self.max_depth:
                        raise _Unsupported
                    if container is not None:
                        stack.append((container, path, key, flow))
                    container = {} if kind is yaml.MappingStartEvent else []
                    path, key, flow = child, None, flow or bool(event.flow_style)
                    continue
            if key is None:
                container.append(value)
            else:
                container[key] = value
                key = None

    def _key(self, event: Any, mapping: dict[str, Any], flow: bool) -> str:
        """A plain name, new in its mapping; for anything else the reference reports it."""
        if type(event) is not yaml.ScalarEvent:
            raise _Unsupported
        key = event.value
        if self._tag(event, flow) != _STR or len(key) > _MAX_KEY or key in mapping:
            raise _Unsupported
        if _is_missing(event):
            raise _Unsupported
        return key

    def _scalar(self, event: Any, flow: bool) -> Any:
        tag = self._tag(event, flow)
        if tag in _TEXT_TAGS:
            return event.value
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
        return _CONSTRUCTORS[tag](self.loader, node)  # KeyError: a tag the reference refuses

    def _tag(self, event: Any, flow: bool) -> str:
        """The tag PyYAML's resolver gives the scalar (yaml.resolver.BaseResolver.resolve)."""
        value = event.value
        if not event.implicit[0]:  # quoted, or a block scalar
            if event.style in _BLOCK_STYLES and not _BLOCK_HEADER.match(
                self.text, event.start_mark.index
            ):
                raise _Unsupported  # libyaml takes headers such as `|#` that PyYAML refuses
            return _STR
        if flow and ("?" in value or ":" in value):
            raise _Unsupported  # libyaml reads more of these plain scalars than PyYAML does
        if (tag := self.tags.get(value)) is None:
            tag = self.tags[value] = self._resolve(value)
        return tag

    def _resolve(self, value: str) -> str:
        for tag, regexp in (*self.resolvers.get(value[:1], ()), *self.wildcard):
            if regexp.match(value):
                return tag
        return _STR


def _is_missing(event: Any) -> bool:
    """An empty plain scalar: a missing value. It has no text of its own, and the two readers
    place some of them differently (one at the end of the file, for instance), so where its
    position is kept (a list item, a key, the root), the reference reads the file."""
    return not event.value and bool(event.implicit[0])


def _expect(event: Any, kind: type) -> Any:
    if type(event) is not kind:
        raise _Unsupported
    return event
