"""Import the Python a workflow names: ``module:attribute`` for steps and tools.

A user keeps their code beside the workflows folder (``shop/`` next to ``workflows/``) and
runs the Dagster code location, or the CLI, from that directory. So the working directory
is put on ``sys.path`` before a reference is imported. It goes at the end: a user's folder
named like an installed package (``test/``, ``mlflow/``) must not shadow that package.

Standard library only, so the load-time rules can import it without langchain.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

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
