"""Describe what a workflow's ``module:attribute`` references name, importing the user's
modules in a child process (spec/python_objects.py is the child).

In-process, ``except BaseException`` would catch ``sys.exit()`` at import, but nothing
catches ``os._exit()``: `validate` and the code location ended with no message, exit 0
included (issue 20, item 1). So a module this process has not imported yet is imported
in the child, and only a description of the object comes back. The parent never imports
it at load: the run imports it, in the run's own process.

Cost, measured (CPU time, medians of 11 to 21, on the 2-core dev machine at a load of 3):
the child takes 26 ms to start (python -I 10 ms, inspect and json the rest), and each module
its own import time (shop.orders 1 ms more; a module that imports langchain_core.tools,
0.5 s). For the shipped workflows/, load_workflows went from 17 ms to 16 ms in-process + 30
ms in the child; `agents-pipelines validate workflows/` from 1,059 to 1,068 ms and a code
location load from 999 to 996 ms as a whole (the difference is within the noise).
One child serves every file that ``probing()`` covers (load_workflows covers a
folder); it starts on first need, so a folder without Python steps or tools starts none,
and again after a module ends it. A module this process imported already is described
here, without a child: importing it again runs nothing. The price: a Dagster run's process
loads the code location too, then imports the run's modules itself, so a module's import
time is paid twice there (0.5 s more for one that imports langchain_core.tools).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NoReturn

from agents_pipelines.spec import python_objects
from agents_pipelines.spec.python_objects import ObjectInfo, import_problem
from agents_pipelines.spec.python_refs import (
    RefError,
    split_ref,
    working_directory_importable,
)

_CHILD = [sys.executable, "-I", python_objects.__file__]  # -I: sys.path comes from us


# A module whose import never ends (a loop, a wait on a server) hung `validate`; a heavy one
# is slow but finite (langchain_core.tools: 1 s of CPU), so the wait is generous.
IMPORT_TIMEOUT_S = 120.0


class RefProbe:
    """A child process that imports modules for this one; started on first use."""

    def __init__(self, import_timeout_s: float = IMPORT_TIMEOUT_S) -> None:
        self._child: subprocess.Popen[str] | None = None
        self._timeout_s = import_timeout_s

    def describe(self, ref: str) -> ObjectInfo:
        """What ``ref`` names. Raises RefError saying why it cannot be resolved."""
        child = self._child or self._start()
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write(json.dumps(ref) + "\n")
            child.stdin.flush()
        except BrokenPipeError:
            self._ended(ref)
        if not select.select([child.stdout], [], [], self._timeout_s)[0]:
            self._stop()
            raise RefError(
                f"module `{split_ref(ref)[0]}` did not finish importing in {self._timeout_s:g} s",
                module_failed=True,
            )
        if not (line := child.stdout.readline()):
            self._ended(ref)
        answer = json.loads(line)
        if "problem" in answer:
            raise RefError(answer["problem"], answer["module_failed"])
        return ObjectInfo.from_json(answer["info"])

    def close(self) -> int | None:
        """Stop the child, if one runs; its exit status (0 when it ended by itself)."""
        if (child := self._child) is None:
            return None
        assert child.stdin is not None
        child.stdin.close()  # the child's loop ends at the end of its input, and it exits
        return self._stop(self._timeout_s)

    def _start(self) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            _CHILD, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
        )
        assert child.stdin is not None
        child.stdin.write(json.dumps(sys.path) + "\n")
        self._child = child
        return child

    def _stop(self, grace_s: float = 0.0) -> int:
        """The child's exit status, once it has exited by itself within ``grace_s`` or been
        killed."""
        child, self._child = self._child, None
        assert child is not None and child.stdout is not None
        try:
            code = child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait()
        child.stdout.close()
        if child.stdin is not None and not child.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                child.stdin.close()
        return code

    def _ended(self, ref: str) -> NoReturn:
        """The module ended the child as it imported: os._exit(), a signal, a crash."""
        code = self._stop(self._timeout_s)  # its output is closed: it is exiting
        how = (
            f"killed by {_signal_name(-code)}"
            if code < 0
            else f"exit status {code}, with no exception: os._exit() or a crash"
        )
        module = split_ref(ref)[0]
        raise RefError(f"module `{module}` ends the process while it imports ({how})", True)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal, which the enum does not all name
        return f"signal {number}"


_probe: ContextVar[RefProbe | None] = ContextVar("ref_probe", default=None)


@contextmanager
def probing() -> Iterator[RefProbe]:
    """One probe for every reference described inside (an outer ``probing()``'s if any)."""
    if (probe := _probe.get()) is not None:
        yield probe
        return
    probe = RefProbe()
    token = _probe.set(probe)
    try:
        yield probe
    finally:
        _probe.reset(token)
        probe.close()


def describe_ref(ref: str) -> ObjectInfo:
    """What ``ref`` names, without running an unknown module's code in this process."""
    module_name, _ = split_ref(ref)
    working_directory_importable()
    if module_name in sys.modules:  # it imported here already: importing runs nothing
        return python_objects.resolve(ref)
    top = module_name.partition(".")[0]
    if not _findable(top):
        raise RefError(import_problem(module_name, ModuleNotFoundError(f"No module named '{top}'")))
    with probing() as probe:
        return probe.describe(ref)


def _findable(top_level: str) -> bool:
    """Whether a top-level module exists, found without running it: a typo needs no child."""
    if top_level in sys.modules:
        return True
    importlib.invalidate_caches()  # a file written since the last look is found too
    return importlib.util.find_spec(top_level) is not None
