"""The collaborative-filtering model, its learning-rate schedule, and a numpy scorer.

:class:`CollaborativeFilteringModel` is the seed project's network: parallel user and anime
embeddings, their cosine (``Dot(normalize=True)``), ``Flatten``, ``Dense(1, sigmoid)``, trained
with binary cross-entropy on min-max scaled ratings. Options (issue "beyond the seed") add
per-user / per-anime bias terms before the activation. The L2 penalty applies to the
embedding rows a batch looks up, so its gradient stays sparse and the lazy trainer pays only
for those rows (Keras' ``embeddings_regularizer`` would penalise, and update, whole tables).

:func:`scorer_from_model` gives the :class:`animerec.scoring.Scorer` that computes exactly what
the model computes, in numpy.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import keras

from animerec.config import LRConfig, ModelConfig
from animerec.scoring import Scorer


def learning_rate(epoch: int, lr: LRConfig, epochs: int | None = None) -> float:
    """Learning rate for a 0-based epoch.

    ``rampup_decay`` (the seed's): linear from ``start_lr`` to ``max_lr`` over ``rampup_epochs``,
    ``max_lr`` for ``sustain_epochs``, then ``(max_lr - min_lr) * exp_decay**k + min_lr``.
    ``cosine``: from ``max_lr`` down to ``min_lr`` over ``epochs``. ``constant``: ``max_lr``.
    """
    schedule = lr.schedule
    max_lr, min_lr = float(lr.max_lr), float(lr.min_lr)
    if schedule == "constant":
        return max_lr
    if schedule == "cosine":
        total = max(1, (epochs or 1) - 1)
        return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * min(epoch, total) / total))
    start_lr = float(lr.start_lr)
    rampup, sustain = int(lr.rampup_epochs), int(lr.sustain_epochs)
    if epoch < rampup:
        return (max_lr - start_lr) / rampup * epoch + start_lr
    if epoch < rampup + sustain:
        return max_lr
    return (max_lr - min_lr) * float(lr.exp_decay) ** (epoch - rampup - sustain) + min_lr


@keras.saving.register_keras_serializable(package="animerec")
class RowEmbedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` whose lookup reads only the requested rows.

    Keras 3's ``Embedding`` calls ``ops.take`` which, on TensorFlow, first converts the whole
    table to a tensor: a full read per step, and a full copy when the optimizer then writes rows
    the read still shares. Gathering straight from the variable keeps both reads and gradients
    at ``[batch, embedding_size]``. On other backends it is the plain layer.
    """

    def call(self, inputs):
        if keras.backend.backend() != "tensorflow":
            return super().call(inputs)
        import tensorflow as tf

        table = self.embeddings.value
        return tf.gather(table, tf.cast(inputs, tf.int32))


@keras.saving.register_keras_serializable(package="animerec")
class CollaborativeFilteringModel(keras.Model):
    """Predicts a scaled rating in (0, 1) for (user, anime) index pairs.

    Inputs: ``{"user": int [batch], "anime": int [batch]}`` (contiguous indices), or the same
    as one int tensor of pairs ``[batch, 2]``.
    Output: ``[batch, 1]`` scaled rating; with ``preference`` ``[batch, 2]``: the rating and the
    probability the user picks the anime at all (raw dot product + per-anime bias, trained
    against sampled negatives).
    Weights: ``user_embedding`` ``[num_users, embedding_size]``, ``anime_embedding``
    ``[num_anime, embedding_size]``, ``dense`` kernel ``[1, 1]`` and bias ``[1]``, with
    ``use_bias`` also ``user_bias`` ``[num_users, 1]`` and ``anime_bias`` ``[num_anime, 1]``, and
    with ``preference`` ``preference_bias`` ``[num_anime, 1]``.
    """

    def __init__(
        self,
        num_users: int,
        num_anime: int,
        embedding_size: int = 128,
        kernel_initializer: str = "he_normal",
        l2: float = 1e-6,
        activation: str = "sigmoid",
        use_bias: bool = False,
        preference: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_users = int(num_users)
        self.num_anime = int(num_anime)
        self.embedding_size = int(embedding_size)
        self.kernel_initializer = kernel_initializer
        self.l2 = float(l2)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.preference = bool(preference)
        layers = keras.layers
        self.user_embedding = RowEmbedding(
            self.num_users, self.embedding_size, embeddings_initializer=kernel_initializer, name="user_embedding"
        )
        self.anime_embedding = RowEmbedding(
            self.num_anime, self.embedding_size, embeddings_initializer=kernel_initializer, name="anime_embedding"
        )
        self.dot = layers.Dot(axes=1, normalize=True, name="dot_product")
        self.flatten = layers.Flatten(name="flatten")
        self.dense = layers.Dense(
            1,
            activation=None if self.use_bias else activation,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=keras.regularizers.L2(self.l2) if self.l2 else None,
            name="dense",
        )
        if self.use_bias:
            self.user_bias = RowEmbedding(self.num_users, 1, embeddings_initializer="zeros", name="user_bias")
            self.anime_bias = RowEmbedding(self.num_anime, 1, embeddings_initializer="zeros", name="anime_bias")
            self.output_activation = layers.Activation(activation, name="activation")
        if self.preference:
            self.preference_bias = RowEmbedding(self.num_anime, 1, embeddings_initializer="zeros",
                                                name="preference_bias")

    def build(self, input_shape: Any = None) -> None:
        self.user_embedding.build((None,))
        self.anime_embedding.build((None,))
        self.dense.build((None, 1))
        if self.use_bias:
            self.user_bias.build((None,))
            self.anime_bias.build((None,))
        if self.preference:
            self.preference_bias.build((None,))
        self.built = True

    def call(self, inputs: Mapping[str, Any], training: bool = False):
        ops = keras.ops
        if isinstance(inputs, Mapping):
            users, anime = inputs["user"], inputs["anime"]
        else:  # [batch, 2] pairs: the form Keras' distributed fit can pass around
            users, anime = inputs[:, 0], inputs[:, 1]
        u = self.user_embedding(users)  # [batch, embedding_size]
        a = self.anime_embedding(anime)  # [batch, embedding_size]
        if self.l2:
            batch = ops.cast(ops.shape(u)[0], u.dtype)
            self.add_loss(self.l2 * (ops.sum(ops.square(u)) + ops.sum(ops.square(a))) / batch)
        x = self.flatten(self.dot([u, a]))  # [batch, 1] cosine
        x = self.dense(x)
        if self.use_bias:
            x = x + self.user_bias(users) + self.anime_bias(anime)
            x = self.output_activation(x)
        if self.preference:
            # [batch, 1] probability that the user would pick this anime: raw dot product + anime bias
            logit = ops.sum(u * a, axis=-1, keepdims=True) + self.preference_bias(anime)
            x = ops.concatenate([x, ops.sigmoid(logit)], axis=-1)
        return x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_users": self.num_users,
            "num_anime": self.num_anime,
            "embedding_size": self.embedding_size,
            "kernel_initializer": self.kernel_initializer,
            "l2": self.l2,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "preference": self.preference,
        }


def build_model(model_cfg: ModelConfig, num_users: int, num_anime: int) -> CollaborativeFilteringModel:
    model = CollaborativeFilteringModel(
        num_users=num_users,
        num_anime=num_anime,
        embedding_size=model_cfg.embedding_size,
        kernel_initializer=model_cfg.kernel_initializer,
        l2=float(model_cfg.l2),
        activation=model_cfg.activation,
        use_bias=bool(model_cfg.use_bias),
        preference=int(model_cfg.negatives_per_positive) > 0,
        name="anime_cf",
    )
    model.build()
    return model


def scorer_from_model(model: CollaborativeFilteringModel) -> Scorer:
    kernel, bias = model.dense.get_weights()
    return Scorer.from_weights(
        model.user_embedding.get_weights()[0],
        model.anime_embedding.get_weights()[0],
        kernel,
        bias,
        model.activation,
        model.user_bias.get_weights()[0] if model.use_bias else None,
        model.anime_bias.get_weights()[0] if model.use_bias else None,
        model.preference_bias.get_weights()[0] if model.preference else None,
    )
