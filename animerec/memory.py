"""Peak memory of this process, logged at the end of heavy phases (full-size runs need it)."""

from __future__ import annotations

import logging
import resource
import sys
from contextlib import contextmanager

logger = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


@contextmanager
def phase(name: str):
    """Log the peak RSS after the ``with`` block, and how much it grew there."""
    before = peak_rss_mb()
    yield
    after = peak_rss_mb()
    logger.info("memory: %s: peak RSS %.0f MB%s", name, after,
                 f" (+{after - before:.0f} MB)" if after > before else "")
