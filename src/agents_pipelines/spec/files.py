"""Read a small regular file safely: workflow files and the sensor's inbox files alike.

A path found by a folder walk or a glob may be anything: a FIFO named ``x.yaml`` blocks the
reader until some process writes to it, a device never ends, and a 1 GB file would be read
whole before a length check. So the path is stat'ed first, only a regular file is opened,
and at most ``limit + 1`` bytes are read (a file that grows after the stat is still caught).
With ``follow_links=False`` (the sensor's inbox) a symbolic link is refused, at the stat and
again at the open (``O_NOFOLLOW``), so a link swapped in between the two is refused too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 1_000_000
# O_NONBLOCK: should the path become a FIFO between the stat and the open, the open returns
# at once instead of waiting for a writer; the fstat after it then refuses the FIFO.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class UnreadableFileError(Exception):
    """The file cannot be read at all; ``problem`` says why and ``fix`` what to do."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


def too_large(size: int, limit: int = MAX_FILE_BYTES) -> UnreadableFileError:
    return UnreadableFileError(
        f"the file is {size:,} bytes, over the {limit:,}-byte limit", "split it into smaller files"
    )


def read_limited(path: Path, limit: int = MAX_FILE_BYTES, *, follow_links: bool = True) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; with
    ``follow_links=False``, not a symbolic link either."""
    try:
        info = os.stat(path) if follow_links else os.lstat(path)
        _check_regular(info.st_mode, info.st_size, limit)  # before opening: a FIFO would block
        descriptor = os.open(path, _OPEN_FLAGS | (0 if follow_links else _NO_FOLLOW))
    except OSError as exc:
        raise _os_error(exc) from None
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        _check_regular(info.st_mode, info.st_size, limit)  # it may have changed since the stat
        try:
            raw = file.read(limit + 1)
        except OSError as exc:
            raise _os_error(exc) from None
    if len(raw) > limit:
        raise too_large(len(raw), limit)
    return raw


def _check_regular(mode: int, size: int, limit: int) -> None:
    for is_kind, kind in _KINDS:
        if is_kind(mode):
            raise UnreadableFileError(
                f"it is {kind}, not a regular file", "replace it with a regular file, or remove it"
            )
    if not stat.S_ISREG(mode):
        raise UnreadableFileError(
            "it is not a regular file", "replace it with a regular file, or remove it"
        )
    if size > limit:
        raise too_large(size, limit)


def _os_error(exc: OSError) -> UnreadableFileError:
    reason = exc.strerror or str(exc)
    return UnreadableFileError(
        f"cannot read the file ({reason})", "check that the path exists and is readable"
    )
