"""Helpers shared by the tests that run the app on 127.0.0.1: a free port and this process's memory."""
from __future__ import annotations

import ctypes
import gc
import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb() -> float:
    """Resident memory of this process (the app runs in it), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def settled_rss_mb() -> float:
    """RSS after a full garbage collection and, on glibc, after giving freed heap pages back to the system
    (what the app still holds, not what the allocator keeps cached for reuse)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return rss_mb()
