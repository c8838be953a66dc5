"""What a ``module:attribute`` reference names, told as plain data, and the child process
that imports the user's modules to tell it.

A user's module runs arbitrary code as it imports: it may print, call ``sys.exit()`` or
``os._exit()``, or raise anything. ``validate`` and the code location must report that as a
finding of the workflow that names the module, never die of it (issue 20, item 1), so
modules the process has not imported yet are imported here, in a child process
(spec/ref_probe.py starts it), and the load-time rules read an ``ObjectInfo`` instead of
the object.

This file runs as that child by its path (``python -I .../python_objects.py``): it imports
the standard library only, and nothing of agents_pipelines, whose package would cost the
child about 300 ms of imports. The parent imports it as a module for the same
descriptions of objects it already holds.

The protocol, one JSON document a line: the parent writes the ``sys.path`` to use, then one
reference a line; the child answers each with ``{"info": {...}}`` or
``{"problem": "...", "module_failed": bool}``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from typing import IO, Any, NamedTuple

# The child imports as little as it can (python -X importtime): inspect, for signatures,
# costs 10 ms and json 2; dataclasses and traceback would add 10 more, so the descriptions
# are named tuples and traceback is imported only for a failed import. The child then
# takes 26 ms of CPU to start, python -I alone 10 ms.


class ParameterInfo(NamedTuple):
    name: str
    kind: str  # inspect.Parameter's kind, by name: "POSITIONAL_OR_KEYWORD", "VAR_KEYWORD"...
    has_default: bool
    annotated: bool


class ObjectInfo(NamedTuple):
    """What the load-time rules ask of the object a reference names."""

    type_name: str
    is_callable: bool
    is_function: bool  # a `def` or `async def` function
    is_langchain_tool: bool
    has_doc: bool
    tool_name: str | None  # the name Gemini calls it by, when it is a tool
    parameters: tuple[ParameterInfo, ...]  # empty when it has no signature (a builtin)

    @classmethod
    def from_json(cls, data: list[Any]) -> ObjectInfo:
        *fields, parameters = data
        return cls._make([*fields, tuple(ParameterInfo._make(p) for p in parameters)])


def describe(target: object) -> ObjectInfo:
    langchain_tool = _is_langchain_tool(target)
    function = inspect.isfunction(target) or inspect.iscoroutinefunction(target)
    name = getattr(target, "name" if langchain_tool else "__name__", None)
    return ObjectInfo(
        type_name=type(target).__name__,
        is_callable=callable(target),
        is_function=function,
        is_langchain_tool=langchain_tool,
        has_doc=bool(inspect.getdoc(target)) if function else False,
        tool_name=name if isinstance(name, str) else None,
        parameters=_parameters(target) if callable(target) else (),
    )


def _parameters(target: Any) -> tuple[ParameterInfo, ...]:
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return ()
    return tuple(
        ParameterInfo(p.name, p.kind.name, p.default is not p.empty, p.annotation is not p.empty)
        for p in parameters
    )


def _is_langchain_tool(target: object) -> bool:
    """A BaseTool, checked by name so that workflows without tools never import langchain."""
    return any(
        cls.__name__ == "BaseTool" and cls.__module__.startswith("langchain_core.tools")
        for cls in type(target).__mro__
    )


def import_problem(module_name: str, exc: BaseException) -> str:
    """Why ``module_name`` did not import, with the line of the user's code that raised."""
    if isinstance(exc, SystemExit):
        what = f"calls sys.exit({exc.code!r}) while it imports"
    else:
        what = f"does not import: {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    where = _raised_at(exc)
    return f"module `{module_name}` {what}" + (f" ({where})" if where else "")


def _raised_at(exc: BaseException) -> str | None:
    """``file, line N`` of the innermost frame outside the import machinery, if any."""
    import traceback

    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ") and frame.filename != __file__
    ]
    if not frames or "importlib" in frames[-1].filename:
        return None  # e.g. ModuleNotFoundError for the module itself: the message says it
    path = os.path.relpath(frames[-1].filename)
    shown = frames[-1].filename if path.startswith("..") else path
    return f"{shown}, line {frames[-1].lineno}"


class RefError(Exception):
    """A ``module:attribute`` reference that cannot be resolved; ``str()`` says why.

    ``module_failed``: the module was found but its own code failed as it imported (it
    raised, exited or ended the process), rather than a name that was not found."""

    def __init__(self, problem: str, module_failed: bool = False) -> None:
        super().__init__(problem)
        self.module_failed = module_failed


def load_object(ref: str) -> object:
    """The object ``ref`` names, its module imported. Raises RefError saying why not."""
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except KeyboardInterrupt:  # Ctrl-C (and the CLI's SIGTERM) still stop the process
        raise
    except BaseException as exc:  # the user's module may raise anything, SystemExit too
        raise RefError(import_problem(module_name, exc), _failed_in(module_name, exc)) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RefError(f"module `{module_name}` has no attribute `{attribute}`") from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a module-level __getattr__ may raise anything too
        problem = f"module `{module_name}` raised {type(exc).__name__} for `{attribute}`: {exc}"
        raise RefError(problem, module_failed=True) from exc


def resolve(ref: str) -> ObjectInfo:
    """The ObjectInfo of what ``ref`` names; RefError if it cannot be had, or inspected."""
    target = load_object(ref)
    try:
        return describe(target)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # an object whose attributes raise as they are read
        problem = f"`{ref}` cannot be inspected: {type(exc).__name__}: {exc}"
        raise RefError(problem, module_failed=True) from exc


def _failed_in(module_name: str, exc: BaseException) -> bool:
    """False when the module (or a package above it) was not found: a spelling problem."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return True
    return not (module_name == exc.name or module_name.startswith(exc.name + "."))


def serve(requests: IO[str], answers: IO[str]) -> None:
    """The child's loop: ``sys.path`` first, then a reference a line, answered a line each."""
    sys.path[:] = json.loads(requests.readline())
    for line in requests:
        ref = json.loads(line)
        answer: dict[str, Any]
        try:
            answer = {"info": resolve(ref)}
        except RefError as exc:
            answer = {"problem": str(exc), "module_failed": exc.module_failed}
        except KeyboardInterrupt as exc:  # raised by the module: here it stops nothing
            answer = {"problem": import_problem(ref.partition(":")[0], exc), "module_failed": True}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _main() -> None:
    # The protocol keeps stdin and stdout to itself: the user's modules read an empty stdin,
    # and what they print goes to stderr (which the parent shares), never to the answers
    # nor to `validate`'s report on the parent's stdout.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    serve(requests, answers)
    # Not a normal exit: that would wait for threads a module started, and run its atexit
    # handlers, either of which may never end.
    for stream in (sys.stdout, sys.stderr):  # what the modules printed, to stderr
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    _main()
