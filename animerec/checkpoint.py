"""End-of-epoch training checkpoints that survive a killed process.

One checkpoint is one ``.npz`` file: the model's weights, the optimizer's state (step count and
moments), the best-so-far weights, and a JSON record of the epochs done, the early-stopping state
and the history. It is written to a temporary name in the same folder and renamed over the old
one, so a kill at any moment leaves either the previous checkpoint or the new one, never half of
one; temporary files of killed writers are removed by the next :class:`EpochCheckpoint` on that
folder. The learning-rate schedule is a function of the epoch, so the epoch is its position.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from animerec.artifacts import read_part, write_part

logger = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """Everything a training loop needs to continue after ``epochs_done`` epochs."""

    epochs_done: int
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    best: float = float("inf")
    best_epoch: int = -1
    best_weights: list[np.ndarray] | None = None
    waited: int = 0
    history: list[dict] = field(default_factory=list)
    stopped: bool = False  # early stopping ended the run


class EpochCheckpoint:
    """The checkpoint file at ``path``: :meth:`save` after each epoch, :meth:`load` to resume."""

    FORMAT_VERSION = 1

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a killed writer
            with contextlib.suppress(OSError):
                stale.unlink()

    def save(self, state: TrainingState) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(state.weights)}
        arrays.update({f"o{i}": v for i, v in enumerate(state.optimizer)})
        if state.best_weights is not None:
            arrays.update({f"b{i}": w for i, w in enumerate(state.best_weights)})
        meta = {"epochs_done": state.epochs_done, "best": state.best, "best_epoch": state.best_epoch,
                "waited": state.waited, "history": state.history, "stopped": state.stopped,
                "counts": [len(state.weights), len(state.optimizer),
                           0 if state.best_weights is None else len(state.best_weights)]}
        write_part(self.path, arrays, "checkpoint", self.FORMAT_VERSION, meta)

    def load(self) -> TrainingState | None:
        if not self.path.is_file():
            return None
        data = read_part(self.path, "checkpoint", self.FORMAT_VERSION)
        meta = data.meta
        n_weights, n_optimizer, n_best = meta["counts"]
        return TrainingState(
            epochs_done=int(meta["epochs_done"]),
            weights=[data[f"w{i}"] for i in range(n_weights)],
            optimizer=[data[f"o{i}"] for i in range(n_optimizer)],
            best=float(meta["best"]), best_epoch=int(meta["best_epoch"]),
            best_weights=[data[f"b{i}"] for i in range(n_best)] if n_best else None,
            waited=int(meta["waited"]), history=list(meta["history"]), stopped=bool(meta["stopped"]),
        )

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
