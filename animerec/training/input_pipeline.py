"""Batches for the training loops: ``tf.data`` over in-memory arrays, no per-rating work."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from animerec.training.sampling import TrainData


def positives_per_batch(data: TrainData, batch_size: int) -> int:
    """Rated pairs in each batch: all of it, or with sampled negatives a share that leaves room for them."""
    if data.negatives is None:
        return int(batch_size)
    return max(1, int(batch_size) // (1 + data.negatives.per_positive))


def num_batches(data: TrainData, batch_size: int, drop_remainder: bool = False) -> int:
    per_batch = positives_per_batch(data, batch_size)
    return len(data) // per_batch if drop_remainder else -(-len(data) // per_batch)


def make_dataset(data: TrainData, batch_size: int, *, shuffle: bool, seed: int, drop_remainder: bool = False,
                 epoch: int = 0):
    """A ``tf.data`` pipeline of batches over in-memory arrays, prefetched.

    The arrays become tensors once. Shuffling works on whole batches so that no per-rating
    work happens in the input pipeline: rows are permuted once (seeded), and the order of
    the batches is reshuffled every epoch.

    With ``data.negatives``, a batch of ``batch_size`` rows holds ``batch_size // (1 + per_positive)``
    rated pairs plus ``per_positive`` sampled negatives for each (target -1, weight 1). They are
    drawn as the batch is made, from the sampler's seed, ``epoch`` and the batch's index: memory
    stays that of the rated pairs, and a resumed epoch sees the same negatives.
    """
    n = len(data)
    sampler = data.negatives
    per_batch = positives_per_batch(data, batch_size)
    order = np.random.default_rng(seed).permutation(n) if shuffle else slice(None)
    arrays = [(data.user, np.int32), (data.anime, np.int32), (data.target, np.float32)]
    if data.weight is not None:
        arrays.append((data.weight, np.float32))
    # one column at a time, so at most one permuted numpy copy is alive next to the tensors
    columns = [tf.constant(np.asarray(array[order], dtype)) for array, dtype in arrays]
    del order
    batches = tf.data.Dataset.range(num_batches(data, batch_size, drop_remainder))
    if shuffle:
        batches = batches.shuffle(max(num_batches(data, batch_size, drop_remainder), 1), seed=seed,
                                  reshuffle_each_iteration=True)
    # a static negatives count (TPUs need static shapes) unless some user rated every anime
    static = None if sampler is None or len(sampler.saturated) else per_batch * sampler.per_positive

    def negatives(user, index):
        users, anime = sampler.sample(user, epoch, int(index))
        return users.astype(np.int32), anime.astype(np.int32)

    def gather(i):
        start = i * per_batch
        end = tf.minimum(start + per_batch, n)
        user, anime, target, *weight = (c[start:end] for c in columns)
        if sampler is not None:
            neg_user, neg_anime = tf.numpy_function(negatives, [user, i], [tf.int32, tf.int32], stateful=False)
            neg_user.set_shape([static if drop_remainder else None])
            neg_anime.set_shape([static if drop_remainder else None])
            count = tf.shape(neg_user)[0]
            user, anime = tf.concat([user, neg_user], 0), tf.concat([anime, neg_anime], 0)
            target = tf.concat([target, -tf.ones([count], tf.float32)], 0)
            weight = [tf.concat([weight[0], tf.ones([count], tf.float32)], 0)] if weight else []
        features = {"user": user, "anime": anime}
        return (features, target, weight[0]) if weight else (features, target)

    # Fixed parallelism, no autotuning: on 2 cores the autotuner made about every other epoch twice
    # as slow (102 instead of 50 ms per 10,000-rating batch in benchmarks/train_throughput.py), while
    # the pipeline itself needs well under 1 ms per batch.
    options = tf.data.Options()
    options.autotune.enabled = False
    return (batches.map(gather, num_parallel_calls=input_parallelism(), deterministic=True)
            .prefetch(2).with_options(options))


def input_parallelism(cores: int | None = None) -> int:
    """Batches made at once: two (one ahead of the step), up to four on machines with many cores."""
    cores = os.cpu_count() if cores is None else cores
    return max(2, min(4, int(cores or 1) // 4))
