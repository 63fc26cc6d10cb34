"""Saving matplotlib figures headlessly (the Agg backend), one helper for every step's charts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def figure(path: Path, ncols: int = 1, figsize: tuple[float, float] = (6, 3.5)) -> Iterator:
    """``with figure(path) as (fig, axes): ...`` draws, then saves ``path`` at 100 dpi and closes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
