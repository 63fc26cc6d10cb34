"""Peak memory of this process, logged at the end of heavy phases (full-size runs need it)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import resource
import sys
from contextlib import contextmanager

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """The process's resident set size now, in MiB (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return None


def release() -> None:
    """Free unreachable objects and hand the C heap's free pages back to the OS (glibc's ``malloc_trim``).

    Without it, memory a phase freed (TensorFlow's per-epoch tensors, numpy temporaries) can stay
    resident in the allocator's arenas and add to the next phase's peak.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, looked up once (``find_library`` runs ``ldconfig``); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl): nothing to trim
        return None


@contextmanager
def phase(name: str):
    """Log (at DEBUG: ``-v`` shows it) the peak RSS after the ``with`` block, how much it grew there, and the RSS
    left after it."""
    before = peak_rss_mb()
    yield
    release()
    after, now = peak_rss_mb(), current_rss_mb()
    logger.debug("memory: %s: peak RSS %.0f MB%s%s", name, after, f" (+{after - before:.0f} MB)" if after > before else "",
                f", {now:.0f} MB after it" if now is not None else "")
