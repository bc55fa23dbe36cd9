"""Keep the resident memory of thousands of idle TLS connections small.

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
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>
THRESHOLD = 128 * 1024  # glibc's own starting value, now kept


def fix_mmap_threshold() -> bool:
    """Set a fixed mmap threshold; False where malloc is not glibc's (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("no glibc mallopt: malloc thresholds left alone")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
