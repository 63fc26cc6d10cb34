"""Batches for the training loops: ``tf.data`` over in-memory arrays, no per-rating work."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from animerec.training.sampling import TrainData


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
