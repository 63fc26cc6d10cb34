"""Compiled loops (numba) for the few places where NumPy and SciPy have no fast whole-array form.

Imported only where used, so that importing the library compiles nothing; numba caches the
machine code on disk after the first call.
"""

from __future__ import annotations

import numba
import numpy as np


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
