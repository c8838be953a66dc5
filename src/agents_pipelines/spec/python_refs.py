"""Import the Python a workflow names: ``module:attribute`` for steps and tools.

A user keeps their code beside the workflows folder (``shop/`` next to ``workflows/``) and
runs the Dagster code location, or the CLI, from that directory. So the working directory
is put on ``sys.path`` before a reference is imported. It goes at the end: a user's folder
named like an installed package (``test/``, ``mlflow/``) must not shadow that package.

Standard library only, so the load-time rules can import it without langchain.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

_path_lock = threading.Lock()


class RefError(Exception):
    """A ``module:attribute`` reference that cannot be resolved; ``str()`` says why."""


def split_ref(ref: str) -> tuple[str, str]:
    module, _, attribute = ref.partition(":")
    return module, attribute


def import_ref(ref: str) -> object:
    """The object ``ref`` names. Raises RefError naming the import error or the attribute."""
    module_name, attribute = split_ref(ref)
    _working_directory_importable()
    if module_name not in sys.modules:
        importlib.invalidate_caches()  # a file written since the last import is found too
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it imports
        raise RefError(
            f"module `{module_name}` does not import: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise RefError(f"module `{module_name}` has no attribute `{attribute}`") from None


def _working_directory_importable() -> None:
    """Put the working directory on sys.path (at the end) unless it is there."""
    cwd = os.getcwd()
    with _path_lock:
        if cwd not in sys.path and "" not in sys.path:
            sys.path.append(cwd)


def code_sha256(refs: Iterable[str]) -> str | None:
    """sha256 of the source files of the modules ``refs`` name, or None if there are none.

    Part of a workflow's version: a checkpoint of other code is not resumed. The module a
    reference names is hashed, not the modules it imports in turn."""
    modules = sorted({split_ref(ref)[0] for ref in refs})
    if not modules:
        return None
    _working_directory_importable()
    digest = hashlib.sha256()
    for name in modules:
        digest.update(b"\0".join((name.encode(), _source(name), b"")))
    return digest.hexdigest()


def _source(module_name: str) -> bytes:
    """The module's source file as it is now, found without importing it (an imported
    module's own spec); empty for a module without one (built in, or not importable,
    which the load-time rules report)."""
    try:
        spec = importlib.util.find_spec(module_name)
        return Path(spec.origin).read_bytes() if spec and spec.origin else b""
    except Exception:  # an unreadable file, or a parent package that raises as it imports
        return b""
