"""Batches for the training loops: ``tf.data`` over in-memory arrays, no per-rating work."""

from __future__ import annotations

import os
import weakref

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

    Rows are permuted once (seeded) and the order of the batches is reshuffled every epoch, so
    no per-rating work happens in the input pipeline. Each batch's rows are taken from the numpy
    arrays as the batch is made: the ratings are never copied into TensorFlow whole. (A tensor
    copy per epoch, 550 MB at full MyAnimeList size, stayed in oneDNN's memory pool after training
    and added to every later phase's peak.)

    With ``data.negatives``, a batch of ``batch_size`` rows holds ``batch_size // (1 + per_positive)``
    rated pairs plus ``per_positive`` sampled negatives for each (target -1, weight 1). They are
    drawn as the batch is made, from the sampler's seed, ``epoch`` and the batch's index: memory
    stays that of the rated pairs, and a resumed epoch sees the same negatives.
    """
    n = len(data)
    sampler = data.negatives
    per_batch = positives_per_batch(data, batch_size)
    # int32 row numbers: half the memory of numpy's int64 permutation (1e9 ratings would still fit)
    order = np.random.default_rng(seed).permutation(n).astype(np.int32) if shuffle else None
    arrays = [(data.user, np.int32), (data.anime, np.int32), (data.target, np.float32)]
    if data.weight is not None:
        arrays.append((data.weight, np.float32))
    batches = tf.data.Dataset.range(num_batches(data, batch_size, drop_remainder))
    if shuffle:
        batches = batches.shuffle(max(num_batches(data, batch_size, drop_remainder), 1), seed=seed,
                                  reshuffle_each_iteration=True)
    # a static negatives count (TPUs need static shapes) unless some user rated every anime
    static = None if sampler is None or len(sampler.saturated) else per_batch * sampler.per_positive
    rated = per_batch if drop_remainder else None

    source = _Rows(arrays, order, per_batch, n)
    del order
    # TensorFlow's registry of numpy functions keeps every function it is given for the life of the process,
    # so the function holds only a weak reference: the permutation (185 MB at full MyAnimeList size) lives as
    # long as the returned dataset, which holds the strong one.
    gather = _gather_fn(weakref.ref(source), [dtype for _, dtype in arrays], sampler, epoch, rated,
                        static if drop_remainder else None)

    # Fixed parallelism, no autotuning: on 2 cores the autotuner made about every other epoch twice
    # as slow (102 instead of 50 ms per 10,000-rating batch in benchmarks/train_throughput.py), while
    # the pipeline itself needs well under 1 ms per batch.
    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = (batches.map(gather, num_parallel_calls=input_parallelism(), deterministic=True)
               .prefetch(2).with_options(options))
    dataset._animerec_rows = source  # iterate this dataset (or one derived from it while it is alive)
    return dataset


def _gather_fn(weak, dtypes: list, sampler, epoch: int, rated: int | None, static: int | None):
    """The pipeline's map function: a batch index -> ``(features, target[, weight])``, the rated pairs taken
    from the arrays through ``weak`` (a weak reference to the :class:`_Rows`) and the sampled negatives added."""

    def rows(index):  # -> this batch's columns, numpy
        return weak()(int(index))

    def negatives(user, index):
        users, anime = sampler.sample(user, epoch, int(index))
        return users.astype(np.int32), anime.astype(np.int32)

    def gather(i):
        columns = tf.numpy_function(rows, [i], [tf.as_dtype(dtype) for dtype in dtypes], stateful=False)
        for column in columns:
            column.set_shape([rated])
        user, anime, target, *weight = columns
        if sampler is not None:
            neg_user, neg_anime = tf.numpy_function(negatives, [user, i], [tf.int32, tf.int32], stateful=False)
            neg_user.set_shape([static])
            neg_anime.set_shape([static])
            count = tf.shape(neg_user)[0]
            user, anime = tf.concat([user, neg_user], 0), tf.concat([anime, neg_anime], 0)
            target = tf.concat([target, -tf.ones([count], tf.float32)], 0)
            weight = [tf.concat([weight[0], tf.ones([count], tf.float32)], 0)] if weight else []
        features = {"user": user, "anime": anime}
        return (features, target, weight[0]) if weight else (features, target)

    return gather


class _Rows:
    """One batch's rows of the arrays, as numpy columns: ``arrays`` ``[(array [n], dtype)]`` in the order of
    ``order`` ``[n]`` (int32 row numbers; None: as stored), ``per_batch`` rows a batch."""

    def __init__(self, arrays, order: np.ndarray | None, per_batch: int, n: int) -> None:
        self.arrays, self.order, self.per_batch, self.n = arrays, order, per_batch, n

    def __call__(self, index: int) -> tuple[np.ndarray, ...]:
        start = index * self.per_batch
        end = min(start + self.per_batch, self.n)
        taken = slice(start, end) if self.order is None else self.order[start:end]
        return tuple(np.asarray(array[taken], dtype) for array, dtype in self.arrays)


def input_parallelism(cores: int | None = None) -> int:
    """Batches made at once: two (one ahead of the step), up to four on machines with many cores."""
    cores = os.cpu_count() if cores is None else cores
    return max(2, min(4, int(cores or 1) // 4))
