"""Compiled loops (numba) for the few places where NumPy and SciPy have no fast whole-array form: the
EASE Gram matrix (training), the co-rating counts behind similar anime and users, and the fold-in's
Adam steps (serving: each a loop of numpy calls, slower by their count).

Imported only where used, so that importing the library compiles nothing; numba caches the
machine code on disk after the first call.
"""

from __future__ import annotations

import numba
import numpy as np

from animerec.threads import in_two_threads


def lower_gram(indptr: np.ndarray, indices: np.ndarray, n: int) -> np.ndarray:
    """The lower triangle of ``X'X`` ``[n, n]`` float32 for the binary CSR ``X`` ``[users, n]`` given by
    ``indptr`` ``[users + 1]`` (int64) and ``indices`` (int32, sorted within each row); the upper one is 0."""
    owners = 32 * numba.get_num_threads()  # many small interleaved row bands balance the cores
    return _lower_gram(indptr, indices, n, owners, 8)


@numba.njit(parallel=True, cache=True)
def _lower_gram(indptr, indices, n, owners, band):  # pragma: no cover - compiled
    gram = np.zeros((n, n), np.float32)
    for owner in numba.prange(owners):  # an owner adds into rows i with (i // band) % owners == owner
        for user in range(len(indptr) - 1):
            start, end = indptr[user], indptr[user + 1]
            for a in range(start, end):
                i = indices[a]
                if (i // band) % owners != owner:
                    continue
                row = gram[i]
                for b in range(start, a + 1):  # sorted indices: every j <= i, the lower triangle
                    row[indices[b]] += 1.0
    return gram


def count_columns(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray, size: int) -> np.ndarray:
    """How often each column appears in the CSR rows ``rows`` ``[k]``: ``[size]`` int32 (the rows' sum for a
    binary matrix). Counted in two threads (the compiled loop lets go of the interpreter lock) once the rows
    hold more than :data:`SPLIT_COUNTS` entries."""
    rows = np.asarray(rows, np.int64)
    lengths = np.cumsum(indptr[rows + 1] - indptr[rows])
    counts = np.zeros(size, np.int32)
    if len(rows) == 0 or lengths[-1] <= SPLIT_COUNTS:
        _count(indptr, indices, rows, counts)
        return counts
    half = int(np.searchsorted(lengths, lengths[-1] // 2))  # the rows split where half the entries lie
    other = np.zeros(size, np.int32)
    in_two_threads(lambda: _count(indptr, indices, rows[:half], counts),
                   lambda: _count(indptr, indices, rows[half:], other))
    counts += other
    return counts


SPLIT_COUNTS = 1_000_000  # entries from which two threads count (a full-size user's anime: ~3M raters)


@numba.njit(nogil=True, cache=True)
def _count(indptr, indices, rows, counts):  # pragma: no cover - compiled
    for row in rows:
        for at in range(indptr[row], indptr[row + 1]):
            counts[indices[at]] += 1


ACTIVATION_CODES = {"sigmoid": 0, "softplus": 1}


@numba.njit(nogil=True, cache=True)
def adam_fold_in(anime, target, base, params, kernel, with_bias, contrast, activation, steps, learning_rate,
                 bias_l2, norm_eps):  # pragma: no cover - compiled
    """Adam on ``params`` ``[d + 1]`` (a user vector, then its bias), in place: the loss of
    :func:`animerec.foldin.fit_user` over ``anime`` ``[r, d]`` (unit rows, float64), ``target`` ``[r]`` and the
    logit's fixed part ``base`` ``[r]``; ``activation`` a code of :data:`ACTIVATION_CODES`."""
    r, d = anime.shape
    moment, second, grad = np.zeros(d + 1), np.zeros(d + 1), np.zeros(d + 1)
    residual = np.empty(r)
    for step in range(1, steps + 1):
        w, b = params[:d], params[d]
        norm = np.sqrt(max(np.dot(w, w), norm_eps))
        unit = w / norm
        z = np.dot(anime, unit * kernel) + base
        if with_bias:
            z += b
        for i in range(r):
            if activation == 0:  # sigmoid with cross-entropy: the gradient is p - target
                residual[i] = 1.0 / (1.0 + np.exp(-z[i])) - target[i]
            else:  # softplus with squared error
                residual[i] = (np.logaddexp(0.0, z[i]) - target[i]) / (1.0 + np.exp(-z[i]))
        if contrast:
            grad_unit = np.dot(residual, anime) * (kernel / r)
            grad[:d] = (grad_unit - unit * np.dot(unit, grad_unit)) / norm
        grad[d] = residual.sum() / r + bias_l2 * b if with_bias else 0.0
        moment[:] = 0.9 * moment + 0.1 * grad
        second[:] = 0.999 * second + 0.001 * (grad * grad)
        params -= (learning_rate / (1 - 0.9**step)) * moment / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
