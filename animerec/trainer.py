"""Training: a lazy, row-wise Adam for the embedding tables, and plain ``model.fit``.

Keras 3's Adam turns the sparse gradient of an embedding lookup into a dense update of the
whole table, so every step costs ``O(num_users * d)`` however small the batch. :class:`LazyAdam`
applies Adam only to the rows a batch touched (``tf.unique`` + segment sum + scatter), with
the same moment and bias-correction arithmetic as Keras' Adam for dense variables. The model
stays an ordinary Keras model: it saves, loads and predicts as usual. Under a ``tf.distribute``
strategy with several replicas (or a TPU), :class:`DistributedTrainer` runs the same loop through
``strategy.run`` with Keras' Adam.

Both trainers use the same loss (the model's loss plus its L2 penalty), learning-rate schedule
(one value per epoch), early stopping on ``val_loss`` with the best weights restored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from animerec.model import learning_rate

logger = logging.getLogger(__name__)


class NegativeSampler:
    """Anime a user has not rated, drawn uniformly, ``per_positive`` for each of their ratings.

    ``known`` holds every (user, anime) pair the sampler must never return: all the ratings the
    training knows of (train and validation), not only the batch's. Draws that hit a known pair
    are redrawn until none is left. Each epoch gets fresh negatives (seeded by seed and epoch).
    """

    def __init__(self, known_user: np.ndarray, known_anime: np.ndarray, num_anime: int, per_positive: int, seed: int):
        self.num_anime, self.per_positive, self.seed = int(num_anime), int(per_positive), int(seed)
        self.known = np.unique(np.asarray(known_user, np.int64) * self.num_anime + np.asarray(known_anime, np.int64))
        users, counts = np.unique(np.asarray(known_user, np.int64), return_counts=True)
        self.saturated = users[counts >= self.num_anime]  # users who rated everything get no negatives

    def is_known(self, user: np.ndarray, anime: np.ndarray) -> np.ndarray:
        keys = np.asarray(user, np.int64) * self.num_anime + np.asarray(anime, np.int64)
        position = np.minimum(np.searchsorted(self.known, keys), len(self.known) - 1)
        return self.known[position] == keys

    def sample(self, user: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(users, anime)`` negatives for the positives of ``user`` ``[n]``: ``[n * per_positive]`` each."""
        rng = np.random.default_rng([self.seed, epoch])
        users = np.repeat(np.asarray(user, np.int64), self.per_positive)
        if len(self.saturated):
            users = users[~np.isin(users, self.saturated)]
        anime = rng.integers(0, self.num_anime, len(users))
        redraw = self.is_known(users, anime)
        while redraw.any():
            anime[redraw] = rng.integers(0, self.num_anime, int(redraw.sum()))
            redraw[redraw] = self.is_known(users[redraw], anime[redraw])
        return users, anime


@dataclass
class TrainData:
    """One split as parallel arrays: ``user`` and ``anime`` indices ``[n]``, targets ``[n]``.

    With a ``negatives`` sampler, :meth:`for_epoch` adds sampled negatives with target ``-1``
    (the preference head's "did not pick"; the rating head ignores them).
    """

    user: np.ndarray
    anime: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None
    negatives: NegativeSampler | None = None

    def __len__(self) -> int:
        return len(self.target)

    def for_epoch(self, epoch: int) -> "TrainData":
        if self.negatives is None:
            return self
        users, anime = self.negatives.sample(self.user, epoch)
        weight = None if self.weight is None else np.concatenate([self.weight, np.ones(len(users), np.float32)])
        return TrainData(np.concatenate([self.user, users]), np.concatenate([self.anime, anime]),
                         np.concatenate([self.target, np.full(len(users), -1.0, np.float32)]), weight)


def train_data(frame, model_cfg: Mapping[str, Any], num_anime: int, seed: int, known=()) -> TrainData:
    """A preprocessed split (``user_index``, ``anime_index``, ``rating_scaled``) as TrainData.

    With ``model.negatives_per_positive`` > 0 it samples negatives, never one of the pairs in
    the split itself or in the ``known`` frames (pass train and valid).
    """
    data = TrainData(frame["user_index"].to_numpy(np.int64), frame["anime_index"].to_numpy(np.int64),
                     frame["rating_scaled"].to_numpy(np.float32))
    per_positive = int(model_cfg.get("negatives_per_positive", 0))
    if per_positive > 0:
        frames = [frame, *known]
        data.negatives = NegativeSampler(np.concatenate([f["user_index"].to_numpy() for f in frames]),
                                         np.concatenate([f["anime_index"].to_numpy() for f in frames]),
                                         num_anime, per_positive, seed)
    return data


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    trainer: str = "lazy"

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.epochs)


def _raw(variable):
    """The tf.Variable behind a Keras 3 variable."""
    if isinstance(variable, tf.Variable):
        return variable
    value = variable.value
    return value if isinstance(value, tf.Variable) else variable._value


class LazyAdam:
    """Adam that updates only the rows present in ``tf.IndexedSlices`` gradients."""

    def __init__(self, learning_rate: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7):
        self.learning_rate = tf.Variable(learning_rate, dtype=tf.float32, trainable=False, name="learning_rate")
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self._slots: dict[int, tuple[tf.Variable, tf.Variable]] = {}

    def build(self, variables) -> None:
        for var in variables:
            raw = _raw(var)
            self._slots[id(raw)] = (
                tf.Variable(tf.zeros_like(raw), trainable=False, name=f"m_{var.name}"),
                tf.Variable(tf.zeros_like(raw), trainable=False, name=f"v_{var.name}"),
            )

    def state_variables(self, variables) -> list:
        """The step count and every (m, v) slot, in the order of ``variables``: what a checkpoint saves."""
        out = [self.iterations]
        for var in variables:
            out.extend(self._slots[id(_raw(var))])
        return out

    def apply(self, gradients, variables) -> None:
        self.iterations.assign_add(1)
        t = tf.cast(self.iterations, tf.float32)
        b1, b2 = self.beta_1, self.beta_2
        alpha = self.learning_rate * tf.sqrt(1.0 - tf.pow(b2, t)) / (1.0 - tf.pow(b1, t))
        for grad, var in zip(gradients, variables):
            if grad is None:
                continue
            raw = _raw(var)
            m, v = self._slots[id(raw)]
            if isinstance(grad, tf.IndexedSlices):
                rows, position = tf.unique(grad.indices)
                values = tf.math.unsorted_segment_sum(grad.values, position, tf.shape(rows)[0])
                m_rows = b1 * tf.gather(m, rows) + (1.0 - b1) * values
                v_rows = b2 * tf.gather(v, rows) + (1.0 - b2) * tf.square(values)
                m.scatter_update(tf.IndexedSlices(m_rows, rows))
                v.scatter_update(tf.IndexedSlices(v_rows, rows))
                raw.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
            else:
                m.assign(b1 * m + (1.0 - b1) * grad)
                v.assign(b2 * v + (1.0 - b2) * tf.square(grad))
                raw.assign_sub(alpha * m / (tf.sqrt(v) + self.epsilon))


def make_dataset(data: TrainData, batch_size: int, *, shuffle: bool, seed: int, drop_remainder: bool = False):
    """A ``tf.data`` pipeline of batches over in-memory arrays, prefetched.

    The arrays become tensors once. Shuffling works on whole batches so that no per-rating
    work happens in the input pipeline: rows are permuted once (seeded), and the order of
    the batches is reshuffled every epoch.
    """
    n = len(data)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    columns = [data.user[order].astype(np.int32), data.anime[order].astype(np.int32), data.target[order].astype(np.float32)]
    if data.weight is not None:
        columns.append(data.weight[order].astype(np.float32))
    columns = [tf.constant(c) for c in columns]
    num_batches = n // batch_size if drop_remainder else -(-n // batch_size)
    batches = tf.data.Dataset.range(num_batches)
    if shuffle:
        batches = batches.shuffle(max(num_batches, 1), seed=seed, reshuffle_each_iteration=True)

    def gather(i):
        start = i * batch_size
        end = tf.minimum(start + batch_size, n)
        user, anime, target, *weight = (c[start:end] for c in columns)
        features = {"user": user, "anime": anime}
        return (features, target, weight[0]) if weight else (features, target)

    return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _loss_fn(name: str):
    import keras

    return keras.losses.get(name)


def per_example_loss(loss, prediction, target, negative_weight: float = 1.0, rating_weight: float = 1.0):
    """Loss per example ``[batch]`` for the model's output ``[batch, 1]`` or ``[batch, 2]``.

    One column: ``loss(target, rating)``. Two columns (rating, pick probability): the rating
    loss on rated pairs (target >= 0), times ``rating_weight``, plus binary cross-entropy of
    "picked" (rated) against sampled negatives (target -1). A rated pair counts ``1 + target``
    (a 10 twice as much as a 1: the rating is a graded positive); a negative ``negative_weight``.
    """
    import keras

    if prediction.shape[-1] == 1:
        return loss(target[:, None], prediction)
    positive = tf.cast(target >= 0, prediction.dtype)
    rating = loss(tf.maximum(target, 0.0)[:, None], prediction[:, :1]) * positive * rating_weight
    picked = keras.losses.binary_crossentropy(positive[:, None], prediction[:, 1:])
    return rating + picked * (positive * (1.0 + target) + (1.0 - positive) * negative_weight)


class _Loop:
    """What both custom loops share: one epoch of training steps, and the mean validation loss."""

    name = "loop"
    negative_weight = 1.0
    rating_weight = 1.0

    def losses(self, prediction, target):
        return per_example_loss(self.loss, prediction, target, self.negative_weight, self.rating_weight)

    def _objective(self, features, target, weight, training):  # -> (data loss, data loss + penalties)
        raise NotImplementedError

    def _apply(self, gradients) -> None:
        raise NotImplementedError

    def _step(self, features, target, weight=None):
        with tf.GradientTape() as tape:
            data_loss, total = self._objective(features, target, weight, True)
        self._apply(tape.gradient(total, self.variables))
        return data_loss

    def _eval(self, features, target, weight=None):
        return self._objective(features, target, weight, False)[0]

    def train_step(self, batch):  # -> scalar data loss of the batch
        raise NotImplementedError

    def eval_step(self, batch):
        raise NotImplementedError

    def distribute(self, dataset):
        return dataset

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate.assign(value)

    def optimizer_variables(self) -> list:
        raise NotImplementedError

    def optimizer_state(self) -> list[np.ndarray]:
        return [np.array(v.numpy()) for v in self.optimizer_variables()]

    def set_optimizer_state(self, values: list[np.ndarray]) -> None:
        variables = self.optimizer_variables()
        if len(values) != len(variables):
            raise ValueError(f"The checkpoint holds {len(values)} optimizer variables, this optimizer has "
                             f"{len(variables)}: it was written for another model; use train.resume=false.")
        for variable, value in zip(variables, values):
            variable.assign(value)

    sync_every = 50  # steps between reads of the running loss (each read waits for the device)

    def train_epoch(self, dataset, progress) -> float:
        """One pass; returns the mean batch loss. ``progress(steps, mean_loss_so_far)`` runs every
        ``sync_every`` steps and at the end: the loss is summed on the device in between, so no step
        waits on a device-to-host copy."""
        total, count, reported = tf.zeros([], tf.float32), 0, 0
        for batch in dataset:
            total += tf.cast(self.train_step(batch), tf.float32)
            count += 1
            if count - reported >= self.sync_every:
                progress(count - reported, float(total) / count)
                reported = count
        mean = float(total) / max(count, 1)
        if count > reported:
            progress(count - reported, mean)
        return mean

    def evaluate(self, dataset) -> float:
        total, count = tf.zeros([], tf.float32), 0
        for batch in dataset:
            total += tf.cast(self.eval_step(batch), tf.float32)
            count += 1
        return float(total) / count if count else float("nan")


class LazyTrainer(_Loop):
    """Custom training loop: forward, loss + model.losses, sparse gradients, LazyAdam (one replica)."""

    name = "lazy"

    def __init__(self, model, loss: str, *, negative_weight: float = 1.0, rating_weight: float = 1.0):
        self.model = model
        self.loss = _loss_fn(loss)
        self.negative_weight, self.rating_weight = float(negative_weight), float(rating_weight)
        self.optimizer = LazyAdam()
        self.variables = list(model.trainable_variables)
        self.optimizer.build(self.variables)
        self._train_step = tf.function(self._step, reduce_retracing=True)
        self._eval_step = tf.function(self._eval, reduce_retracing=True)

    def _objective(self, features, target, weight, training):
        per_example = self.losses(self.model(features, training=training), target)
        if weight is not None:
            data_loss = tf.reduce_sum(per_example * weight) / tf.maximum(tf.reduce_sum(weight), 1e-9)
        else:
            data_loss = tf.reduce_mean(per_example)
        penalties = self.model.losses
        return data_loss, (data_loss + tf.add_n(penalties)) if penalties else data_loss

    def _apply(self, gradients) -> None:
        self.optimizer.apply(gradients, self.variables)

    def optimizer_variables(self) -> list:
        return self.optimizer.state_variables(self.variables)

    def train_step(self, batch):
        return self._train_step(*batch)

    def eval_step(self, batch):
        return self._eval_step(*batch)


class DistributedTrainer(_Loop):
    """Custom ``strategy.run`` loop for several replicas (MirroredStrategy, MultiWorkerMirroredStrategy, TPU).

    Each replica computes the loss of its share of the global batch, normalised by the weight of
    the *global* batch (an all-reduce), plus its share of the L2 penalty; Keras' Adam, created in
    the strategy's scope, all-reduces (sums) the gradients and applies the same update on every
    replica, so all workers hold the same weights. Keras' Adam updates whole tables: the row-wise
    trick needs ``tf.unique``'s dynamic shapes, which TPUs lack, and per-replica scatters would
    have to be merged across workers.
    """

    name = "distributed"

    def __init__(self, model, loss: str, strategy, *, negative_weight: float = 1.0, rating_weight: float = 1.0):
        import keras

        self.model, self.strategy = model, strategy
        self.loss = _loss_fn(loss)
        self.negative_weight, self.rating_weight = float(negative_weight), float(rating_weight)
        self.variables = list(model.trainable_variables)
        with strategy.scope():
            self.optimizer = keras.optimizers.Adam()
            self.optimizer.build(self.variables)
        self._train_step = tf.function(self._distributed(self._step))
        self._eval_step = tf.function(self._distributed(self._eval))

    def _distributed(self, replica_fn):
        def step(batch):
            per_replica = self.strategy.run(replica_fn, args=batch)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return step

    def _objective(self, features, target, weight, training):
        context = tf.distribute.get_replica_context()
        per_example = self.losses(self.model(features, training=training), target)
        weight = tf.ones_like(per_example) if weight is None else weight
        global_weight = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(weight))
        data_loss = tf.reduce_sum(per_example * weight) / tf.maximum(global_weight, 1e-9)
        penalties = self.model.losses
        if penalties:
            return data_loss, data_loss + tf.add_n(penalties) / float(self.strategy.num_replicas_in_sync)
        return data_loss, data_loss

    def _apply(self, gradients) -> None:
        self.optimizer.apply_gradients(zip(gradients, self.variables))

    def optimizer_variables(self) -> list:
        return list(self.optimizer.variables)

    def distribute(self, dataset):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def train_step(self, batch):
        return self._train_step(batch)

    def eval_step(self, batch):
        return self._eval_step(batch)


def is_tpu(strategy) -> bool:
    return strategy is not None and type(strategy).__name__.startswith("TPU")


def fit(
    model,
    train: TrainData,
    valid: TrainData | None,
    model_cfg: Mapping[str, Any],
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
    if trainer == "keras":
        if train.negatives is not None:
            from animerec.errors import ConfigError

            raise ConfigError("model.negatives_per_positive > 0 needs the custom loop: use train.trainer=lazy.")
        return _fit_keras(model, train, valid, model_cfg, seed=seed, verbose=verbose, on_epoch_end=on_epoch_end)
    from tqdm.auto import tqdm

    epochs, batch_size, patience = int(model_cfg["epochs"]), int(model_cfg["batch_size"]), int(model_cfg["patience"])
    weights = {"negative_weight": float(model_cfg.get("negative_weight", 1.0)),
               "rating_weight": 1.0 + int(model_cfg.get("negatives_per_positive", 0))}
    if trainer == "distributed":
        if strategy is None:
            raise ValueError("trainer='distributed' needs a tf.distribute strategy.")
        loop: _Loop = DistributedTrainer(model, model_cfg["loss"], strategy, **weights)
    else:
        loop = LazyTrainer(model, model_cfg["loss"], **weights)
    drop = is_tpu(strategy)  # TPUs need static batch shapes

    def dataset(epoch: int, data: TrainData | None = None):
        data = train.for_epoch(epoch) if data is None else data
        return loop.distribute(make_dataset(data, batch_size, shuffle=True, seed=seed + epoch, drop_remainder=drop))

    first = train.for_epoch(0)
    valid_ds = None
    if valid is not None and len(valid):  # a fixed draw of validation negatives
        valid_ds = loop.distribute(make_dataset(valid.for_epoch(0), max(batch_size, 50_000), shuffle=False, seed=seed,
                                                drop_remainder=drop))
    history = History(trainer=loop.name)
    best, best_weights, waited, start = float("inf"), None, 0, 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        try:
            model.set_weights(saved.weights)
            loop.set_optimizer_state(saved.optimizer)
        except ValueError as err:
            from animerec.errors import ConfigError

            raise ConfigError(f"The checkpoint {checkpoint.path} does not fit this model ({err}). Start over with "
                              f"train.resume=false.") from None
        best, best_weights, waited, start = saved.best, saved.best_weights, saved.waited, saved.epochs_done
        history.epochs, history.best_epoch = list(saved.history), saved.best_epoch
        logger.info("Resumed from the checkpoint after epoch %d of %d (%s); train.resume=false starts over.",
                    start, epochs, checkpoint.path)
        if saved.stopped:
            start = epochs  # early stopping had already ended this run
    steps = len(first) // batch_size if drop else int(np.ceil(len(first) / batch_size))
    for epoch in range(start, epochs):
        # Each epoch's batches depend only on the seed and the epoch (fresh negatives, its own shuffle),
        # so a run resumed from a checkpoint sees exactly the batches an uninterrupted run would.
        train_ds = dataset(epoch, first if epoch == 0 else None)
        lr = learning_rate(epoch, model_cfg["lr"], epochs)
        loop.set_learning_rate(lr)
        started = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", disable=not verbose, leave=False, unit="batch") as bar:
            def progress(n, loss):
                bar.update(n)
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", ratings_per_s=f"{bar.n * batch_size / elapsed:,.0f}")

            loss = loop.train_epoch(train_ds, progress)
        seconds = time.perf_counter() - started
        val_loss = loop.evaluate(valid_ds) if valid_ds is not None else loss
        row = {"epoch": epoch + 1, "loss": loss, "val_loss": val_loss, "lr": lr, "seconds": seconds,
               "ratings_per_s": len(train) / seconds}
        history.epochs.append(row)
        logger.info("epoch %d/%d loss %.5f val_loss %.5f lr %.2e (%.1fs, %.0f ratings/s)",
                    epoch + 1, epochs, loss, val_loss, lr, seconds, row["ratings_per_s"])
        if on_epoch_end:
            on_epoch_end(row)
        stop = False
        if val_loss < best - 1e-7:
            best, best_weights, waited, history.best_epoch = val_loss, model.get_weights(), 0, epoch + 1
        else:
            waited += 1
            stop = waited >= patience
        if checkpoint is not None:
            from animerec.checkpoint import TrainingState

            checkpoint.save(TrainingState(epoch + 1, model.get_weights(), loop.optimizer_state(), best,
                                          history.best_epoch, best_weights, waited, history.epochs, stop))
        if stop:
            logger.info("Early stopping after epoch %d: val_loss has not improved for %d epochs", epoch + 1, patience)
            break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history


def _fit_keras(model, train, valid, model_cfg, *, seed, verbose, on_epoch_end) -> History:
    """Plain ``model.fit`` with Keras' Adam on one device: the reference the benchmark and tests compare with.

    Under several replicas Keras 3.15's distributed ``fit`` fails to build the model from a
    ``PerReplica`` batch, so :func:`animerec.strategy.trainer_for` sends those to ``distributed``.
    """
    import keras

    batch_size = int(model_cfg["batch_size"])
    train_ds = make_dataset(train, batch_size, shuffle=True, seed=seed)
    valid_ds = make_dataset(valid, batch_size, shuffle=False, seed=seed) if valid is not None and len(valid) else None
    epochs = int(model_cfg["epochs"])
    model.compile(optimizer=keras.optimizers.Adam(), loss=model_cfg["loss"])
    rows: list[dict] = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": float(logs.get("val_loss", logs["loss"])),
                   "lr": learning_rate(epoch, model_cfg["lr"], epochs), "seconds": seconds,
                   "ratings_per_s": len(train) / seconds}
            rows.append(row)
            if on_epoch_end:
                on_epoch_end(row)

    callbacks = [
        keras.callbacks.LearningRateScheduler(lambda epoch, _lr: learning_rate(epoch, model_cfg["lr"], epochs)),
        Record(),
    ]
    if valid_ds is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=int(model_cfg["patience"]), restore_best_weights=True))
    model.fit(train_ds, validation_data=valid_ds, epochs=epochs, callbacks=callbacks, verbose=1 if verbose else 0)
    history = History(epochs=rows, trainer="keras")
    if rows:
        history.best_epoch = int(np.argmin([r["val_loss"] for r in rows])) + 1
    return history
