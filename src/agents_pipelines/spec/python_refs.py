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
import importlib.machinery
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from agents_pipelines.spec.python_objects import RefError, load_object

__all__ = ["RefError", "import_ref", "split_ref", "working_directory_importable"]

_path_lock = threading.Lock()


def split_ref(ref: str) -> tuple[str, str]:
    module, _, attribute = ref.partition(":")
    return module, attribute


def import_ref(ref: str) -> object:
    """The object ``ref`` names. Raises RefError naming the import error or the attribute."""
    module_name, _ = split_ref(ref)
    working_directory_importable()
    if module_name not in sys.modules:
        importlib.invalidate_caches()  # a file written since the last import is found too
    return load_object(ref)


def working_directory_importable() -> None:
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
    working_directory_importable()
    digest = hashlib.sha256()
    for name in modules:
        digest.update(b"\0".join((name.encode(), _source(name), b"")))
    return digest.hexdigest()


def _source(module_name: str) -> bytes:
    """The module's source file as it is now, found without importing it or its parent
    packages (``importlib.util.find_spec`` imports a dotted name's parents, and a parent
    that exits as it imports would end the loading process: see spec/ref_probe.py). Empty
    for a module without a source file (built in, or not findable, which the load-time
    rules report)."""
    origin = _source_file(module_name)
    try:
        return Path(origin).read_bytes() if origin else b""
    except OSError:  # unreadable: the load-time rules report the import
        return b""


def _source_file(module_name: str) -> str | None:
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return getattr(loaded, "__file__", None)
    search: list[str] | None = None  # sys.path for the top-level name
    spec = None
    for part in module_name.split("."):
        name = part if spec is None else f"{spec.name}.{part}"
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    return spec.origin if spec is not None else None
