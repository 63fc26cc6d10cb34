"""The loss, and the two custom training loops: one replica with LazyAdam, several with Keras' Adam.

Both use the same loss (the model's loss plus its L2 penalty) and differ only in how an update
is applied; :func:`animerec.trainer.fit` runs either for the epochs, the schedule, early stopping
and checkpoints.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from animerec.training.lazy_adam import LazyAdam


def _loss_fn(name: str):
    import keras

    return keras.losses.get(name)


def per_example_loss(loss, prediction, target, rating_weight: float = 1.0):
    """Loss per example ``[batch]`` for the model's output ``[batch, 1]`` or ``[batch, 2]``.

    One column: ``loss(target, rating)``. Two columns (rating, pick probability): the rating
    loss on rated pairs (target >= 0), times ``rating_weight``, plus binary cross-entropy of
    "picked" (rated) against sampled negatives (target -1). A rated pair counts ``1 + target``
    (a 10 twice as much as a 1: the rating is a graded positive), a negative 1.
    """
    import keras

    if prediction.shape[-1] == 1:
        return loss(target[:, None], prediction)
    positive = tf.cast(target >= 0, prediction.dtype)
    rating = loss(tf.maximum(target, 0.0)[:, None], prediction[:, :1]) * positive * rating_weight
    picked = keras.losses.binary_crossentropy(positive[:, None], prediction[:, 1:])
    return rating + picked * (1.0 + positive * target)  # a rated pair 1 + target, a negative 1


class _Loop:
    """What both custom loops share: one epoch of training steps, and the mean validation loss."""

    name = "loop"
    rating_weight = 1.0

    def losses(self, prediction, target):
        return per_example_loss(self.loss, prediction, target, self.rating_weight)

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

    def __init__(self, model, loss: str, *, rating_weight: float = 1.0):
        self.model = model
        self.loss = _loss_fn(loss)
        self.rating_weight = float(rating_weight)
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

    def __init__(self, model, loss: str, strategy, *, rating_weight: float = 1.0):
        import keras

        self.model, self.strategy = model, strategy
        self.loss = _loss_fn(loss)
        self.rating_weight = float(rating_weight)
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
