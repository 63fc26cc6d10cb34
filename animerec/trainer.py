"""Training: :func:`fit` runs the epochs (schedule, early stopping, checkpoints) over one of the loops.

The pieces live in :mod:`animerec.training` (negatives, tf.data, LazyAdam, the loops) and are
re-exported here. The lazy, row-wise Adam keeps the model an ordinary Keras model: it saves,
loads and predicts as usual. Under a ``tf.distribute`` strategy with several replicas (or a
TPU), :class:`DistributedTrainer` runs the same loop through ``strategy.run`` with Keras' Adam;
``trainer="keras"`` is plain ``model.fit``, the reference the benchmark compares with.

Both trainers use the same loss (the model's loss plus its L2 penalty), learning-rate schedule
(one value per epoch), early stopping on ``val_loss`` with the best weights restored.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from animerec.checkpoint import TrainingState
from animerec.config import ModelConfig
from animerec.errors import ConfigError
from animerec.model import learning_rate
from animerec.training.input_pipeline import make_dataset, num_batches, positives_per_batch
from animerec.training.loops import DistributedTrainer, LazyTrainer
from animerec.training.sampling import TrainData

logger = logging.getLogger(__name__)


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    trainer: str = "lazy"
    planned_epochs: int = 0  # after model.max_train_ratings (see scaled_to)
    batch_size: int = 0  # after model.max_steps_per_epoch

    def frame(self):
        return pd.DataFrame(self.epochs)


def is_tpu(strategy) -> bool:
    return strategy is not None and type(strategy).__name__.startswith("TPU")


def scaled_to(model_cfg: ModelConfig, num_ratings: int) -> ModelConfig:
    """``model_cfg`` with the epochs and batch size it trains ``num_ratings`` rated pairs with.

    ``max_steps_per_epoch`` grows the batch past ``batch_size`` until an epoch takes at most that
    many steps: a user's row is updated about as often either way (once per batch it appears in),
    while each step's fixed cost is paid fewer times. ``max_train_ratings`` caps the epochs so that
    they pass over at most that many ratings in all (at least one epoch); the learning-rate schedule
    then spans the epochs that will run. Small data keeps the configured values.
    """
    batch = int(model_cfg.batch_size)
    if model_cfg.max_steps_per_epoch is not None:
        batch = max(batch, math.ceil(num_ratings / int(model_cfg.max_steps_per_epoch)))
    epochs = int(model_cfg.epochs)
    if model_cfg.max_train_ratings is not None:
        epochs = max(1, min(epochs, int(model_cfg.max_train_ratings) // max(num_ratings, 1)))
    if (epochs, batch) != (model_cfg.epochs, model_cfg.batch_size):
        logger.info("%s ratings to train on: %d epochs of batches of %d (model.epochs=%d, model.batch_size=%d; "
                    "model.max_train_ratings=%s, model.max_steps_per_epoch=%s).", f"{num_ratings:,}", epochs, batch,
                    model_cfg.epochs, model_cfg.batch_size, model_cfg.max_train_ratings, model_cfg.max_steps_per_epoch)
    return model_cfg.model_copy(update=dict(epochs=epochs, batch_size=batch))


def improved(val_loss: float, best: float, min_delta: float) -> bool:
    """Early stopping's rule: ``val_loss`` is better than ``best`` when it is lower by ``min_delta`` of ``best``."""
    return not np.isfinite(best) or val_loss < best - max(1e-7, min_delta * abs(best))


def fit(
    model,
    train: TrainData,
    valid: TrainData | None,
    model_cfg: ModelConfig,
    *,
    trainer: str = "lazy",
    strategy=None,
    seed: int = 42,
    verbose: int = 1,
    on_epoch_end: Callable[[dict], None] | None = None,
    checkpoint=None,
) -> History:
    """Train ``model`` in place; returns the per-epoch history (best weights are restored).

    ``checkpoint`` (an :class:`animerec.checkpoint.EpochCheckpoint`) is saved after every epoch and,
    when it exists, training continues from it (custom loops only).

    ``trainer``: ``lazy`` (row-wise Adam, one replica), ``distributed`` (``strategy.run`` loop
    with Keras' Adam, any ``tf.distribute`` strategy) or ``keras`` (plain ``model.fit``).
    """
    if len(train) == 0:
        raise ValueError("The training split is empty: nothing to train on.")
    model_cfg = scaled_to(model_cfg, len(train))
    if trainer == "keras":
        if train.negatives is not None:
            raise ConfigError("model.negatives_per_positive > 0 needs the custom loop: use train.trainer=lazy.")
        return _fit_keras(model, train, valid, model_cfg, seed=seed, verbose=verbose, on_epoch_end=on_epoch_end)

    epochs, batch_size = int(model_cfg.epochs), int(model_cfg.batch_size)
    loop = _make_loop(model, model_cfg, trainer, strategy)
    drop = is_tpu(strategy)  # TPUs need static batch shapes
    valid_ds = None
    if valid is not None and len(valid):  # the same validation negatives every epoch (epoch 0's draw)
        valid_ds = loop.distribute(make_dataset(valid, max(batch_size, 50_000), shuffle=False, seed=seed,
                                                drop_remainder=drop, epoch=0))
    history = History(trainer=loop.name, planned_epochs=epochs, batch_size=batch_size)
    state = _resume(checkpoint, model, loop, history, epochs)
    for epoch in range(state.epochs_done, epochs):
        # Each epoch's batches depend only on the seed and the epoch (fresh negatives, its own shuffle),
        # so a run resumed from a checkpoint sees exactly the batches an uninterrupted run would.
        made = make_dataset(train, batch_size, shuffle=True, seed=seed + epoch, drop_remainder=drop, epoch=epoch)
        row = _train_epoch(loop, made, train, model_cfg, epoch, verbose=verbose, drop=drop)
        del made  # this epoch's shuffled row order goes before the next epoch's is made
        row["val_loss"] = loop.evaluate(valid_ds) if valid_ds is not None else row["loss"]
        history.epochs.append(row)
        logger.info("epoch %d/%d loss %.5f val_loss %.5f lr %.2e (%.1fs, %.0f ratings/s)", epoch + 1, epochs,
                    row["loss"], row["val_loss"], row["lr"], row["seconds"], row["ratings_per_s"])
        if on_epoch_end:
            on_epoch_end(row)
        if _end_epoch(state, row, model, loop, history, model_cfg, epoch, checkpoint):
            break
    if state.best_weights is not None:
        model.set_weights(state.best_weights)
    return history


def _end_epoch(state, row: dict, model, loop, history: History, model_cfg: ModelConfig, epoch: int,
               checkpoint) -> bool:
    """Early stopping's bookkeeping and the epoch's checkpoint; True when training stops here."""
    if _early_stopping(state, row["val_loss"], model, history, model_cfg, epoch):
        state.stopped = True
    if checkpoint is not None:
        checkpoint.save(TrainingState(epoch + 1, model.get_weights(), loop.optimizer_state(), state.best,
                                      history.best_epoch, state.best_weights, state.waited, history.epochs,
                                      state.stopped))
    if state.stopped:
        logger.info("Early stopping after epoch %d: val_loss has not improved by %g of its best for %d epochs",
                    epoch + 1, float(model_cfg.min_delta), int(model_cfg.patience))
    return state.stopped


def _make_loop(model, model_cfg: ModelConfig, trainer: str, strategy) -> "LazyTrainer | DistributedTrainer":
    """The custom training loop: ``lazy`` (row-wise Adam, one replica) or ``distributed`` (``strategy.run``)."""
    weights = {"rating_weight": 1.0 + int(model_cfg.negatives_per_positive)}
    if trainer == "distributed":
        if strategy is None:
            raise ValueError("trainer='distributed' needs a tf.distribute strategy.")
        return DistributedTrainer(model, model_cfg.loss, strategy, **weights)
    return LazyTrainer(model, model_cfg.loss, **weights)


def _resume(checkpoint, model, loop, history: History, epochs: int) -> TrainingState:
    """The early-stopping state to start from: the checkpoint's (its weights and optimizer state loaded into
    ``model`` and ``loop``, its epochs into ``history``), or a fresh one."""
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        return TrainingState(0, [], [])
    try:
        model.set_weights(saved.weights)
        loop.set_optimizer_state(saved.optimizer)
    except ValueError as err:
        raise ConfigError(f"The checkpoint {checkpoint.path} does not fit this model ({err}). Start over with "
                          f"train.resume=false.") from None
    history.epochs, history.best_epoch = list(saved.history), saved.best_epoch
    logger.info("Resumed from the checkpoint after epoch %d of %d (%s); train.resume=false starts over.",
                saved.epochs_done, epochs, checkpoint.path)
    if saved.stopped:
        saved.epochs_done = epochs  # early stopping had already ended this run
    return saved


def _train_epoch(loop, made, train: TrainData, model_cfg: ModelConfig, epoch: int, *, verbose: int, drop: bool) -> dict:
    """One epoch over ``made`` (its dataset) at the schedule's learning rate, with a progress bar; its history row
    (``val_loss`` still to fill)."""
    epochs, batch_size = int(model_cfg.epochs), int(model_cfg.batch_size)
    lr = learning_rate(epoch, model_cfg.lr, epochs)
    loop.set_learning_rate(lr)
    steps, rated_per_batch = num_batches(train, batch_size, drop), positives_per_batch(train, batch_size)
    started = time.perf_counter()
    with tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, leave=False, unit="batch") as bar:
        def progress(n, loss):
            bar.update(n)
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", ratings_per_s=f"{bar.n * rated_per_batch / elapsed:,.0f}")

        loss = loop.train_epoch(loop.distribute(made), progress)
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "loss": loss, "val_loss": None, "lr": lr, "seconds": seconds,
            "ratings_per_s": len(train) / seconds}


def _early_stopping(state: TrainingState, val_loss: float, model, history: History, model_cfg: ModelConfig,
                    epoch: int) -> bool:
    """Record an epoch's validation loss in ``state``: its weights kept when it improved by ``min_delta`` of the
    best, else one more epoch waited; whether ``patience`` epochs have now passed without improvement."""
    if improved(val_loss, state.best, float(model_cfg.min_delta)):
        state.best, state.best_weights, state.waited, history.best_epoch = val_loss, model.get_weights(), 0, epoch + 1
        return False
    state.waited += 1
    return state.waited >= int(model_cfg.patience)


def _fit_keras(model, train, valid, model_cfg, *, seed, verbose, on_epoch_end) -> History:
    """Plain ``model.fit`` with Keras' Adam on one device: the reference the benchmark and tests compare with.

    Under several replicas Keras 3.15's distributed ``fit`` fails to build the model from a
    ``PerReplica`` batch, so :func:`animerec.strategy.trainer_for` sends those to ``distributed``.
    """
    import keras

    batch_size = int(model_cfg.batch_size)
    train_ds = make_dataset(train, batch_size, shuffle=True, seed=seed)
    valid_ds = make_dataset(valid, batch_size, shuffle=False, seed=seed) if valid is not None and len(valid) else None
    epochs = int(model_cfg.epochs)
    model.compile(optimizer=keras.optimizers.Adam(), loss=model_cfg.loss)
    rows: list[dict] = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": float(logs.get("val_loss", logs["loss"])),
                   "lr": learning_rate(epoch, model_cfg.lr, epochs), "seconds": seconds,
                   "ratings_per_s": len(train) / seconds}
            rows.append(row)
            if on_epoch_end:
                on_epoch_end(row)

    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch, _lr: learning_rate(epoch, model_cfg.lr, epochs)),
        Record(),
    ]

    class Stopping(keras.callbacks.Callback):
        """Early stopping by the custom loop's rule (a fall of ``min_delta`` of the best counts), the best
        epoch's weights restored at the end."""

        def __init__(self):
            super().__init__()
            self.state = TrainingState(0, [], [])

        def on_epoch_end(self, epoch, logs=None):
            stop = _early_stopping(self.state, float(logs["val_loss"]), self.model, history, model_cfg, epoch)
            self.model.stop_training = self.model.stop_training or stop

        def on_train_end(self, logs=None):
            if self.state.best_weights is not None:
                self.model.set_weights(self.state.best_weights)

    history = History(epochs=rows, trainer="keras", planned_epochs=epochs, batch_size=batch_size)
    if valid_ds is not None:
        callbacks.append(Stopping())
    model.fit(train_ds, validation_data=valid_ds, epochs=epochs, callbacks=callbacks, verbose=1 if verbose else 0)
    if rows and valid_ds is None:  # no early stopping: the last epoch's weights
        history.best_epoch = len(rows)
    return history
