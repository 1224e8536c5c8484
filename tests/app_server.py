"""Helpers shared by the tests that run the app on 127.0.0.1: a free port and this process's memory."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterator, Union


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


@contextlib.contextmanager
def launched(build: Callable[[], Any], cache: Union[str, Path], **launch: Any) -> Iterator[tuple[str, Any]]:
    """``(url, demo)`` of ``build()`` (a gr.Blocks) serving on a free 127.0.0.1 port, with ``XDG_CACHE_HOME``
    (direction caches) set to ``cache`` while it runs; closed and restored afterwards."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        demo = build()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch)
        try:
            yield f"http://127.0.0.1:{port}/", demo
        finally:
            demo.close()
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old
