"""Exclusive ownership through a file lock: one capture worker per source, one member per
consumer group on the embedded log. flock is dropped by the kernel when its holder exits,
however it exits (a kill -9 included), so a crashed owner never blocks its successor."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_exclusive(path: Path | str) -> int | None:
    """The fd holding an exclusive lock on `path` (close it to release), or None when another
    process (or another open of the file) holds it."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
