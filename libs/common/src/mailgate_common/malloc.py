"""Talking to glibc's allocator, where resident memory is decided.

``trim`` hands the heap pages freed after start-up (imports, migrations, first
connections: ~4 MB per service) back to the kernel.

``fix_mmap_threshold`` keeps the resident memory of thousands of idle TLS
connections small (imap-sync):

uvloop gives every TLS connection a 256 KB read buffer, of which an idle IMAP
connection touches a page or two.  glibc serves such a block with its own
``mmap`` - untouched pages cost nothing - but only until the first one is
freed: then its dynamic threshold rises above 256 KB and later buffers come
from the heap, recycling pages other code already touched (measured: ~890 KB
resident per account instead of ~40 KB).  Fixing the threshold keeps every
large block on ``mmap``; the cost, one mmap/munmap per large allocation, is
nothing next to a network read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
THRESHOLD = 128 * 1024  # glibc's own starting value, now kept


def _glibc(function: str) -> Any | None:
    """A glibc malloc function, or None where malloc is not glibc's (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), function)
    except (OSError, AttributeError, TypeError):
        log.info("no glibc %s: left alone", function)
        return None


def fix_mmap_threshold() -> bool:
    """Set a fixed mmap threshold; False where malloc is not glibc's."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))


def trim() -> None:
    """Collect garbage, then return free heap pages to the kernel."""
    gc.collect()
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim(0)
