"""Saving matplotlib figures headlessly, one helper for every chart (steps' reports, the web page)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Iterator

from matplotlib.figure import Figure


@contextlib.contextmanager
def figure(path: Path | IO[bytes], ncols: int = 1, figsize: tuple[float, float] = (6, 3.5)) -> Iterator:
    """``with figure(path) as (fig, axes): ...`` draws, then saves a PNG to ``path`` (or a binary file) at
    100 dpi. A bare :class:`~matplotlib.figure.Figure`: no pyplot, no GUI backend, nothing global to close."""
    fig = Figure(figsize=figsize)
    axes = fig.subplots(1, ncols)
    yield fig, axes
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
