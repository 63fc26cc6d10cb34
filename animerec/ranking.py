"""The ranking head: EASE item-item weights over each user's rated anime.

EASE (Steck, "Embarrassingly Shallow Autoencoders", 2019) learns one item-item matrix ``B``
``[m, m]`` in closed form: ``B = I - P diag(1 / diag(P))`` with ``P = (X'X + l2 I)^-1`` and a zero
diagonal, where ``X`` ``[num_users, m]`` is 1 where a user rated an anime (any rating: rating it at
all is the signal). A user's scores are their history row times ``B``; a new user's are the same
product over the anime they list, so folding anyone in is exact and needs no training.

Two knobs can weigh the scores, each neutral at 0: ``like_weight`` multiplies a score by the
anime's shrunk share of ratings >= the relevance threshold to that power, and ``rating_weight``
weighs each anime in a user's history row by ``(rating / their mean rating)`` to that power (the
neighbours of what they loved count more than those of what they merely finished).
:func:`animerec.ranking_cv.fit_ranker` chooses L2 and the knobs by K-fold cross-validation over train + valid
(animerec/ranking_cv.py), then fits the head on both: the stored head knows every rating but the
test ones, and ranks a user's known anime last.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import ClassVar, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack

from animerec.errors import ConfigError

logger = logging.getLogger(__name__)

LIKE_PRIOR = 10.0  # pseudo-ratings that shrink an anime's like-rate towards the global one
_BLOCK = 2048  # rows per block when symmetrising the inverse in place


def interaction_matrix(users: np.ndarray, anime: np.ndarray, num_users: int, num_anime: int) -> sp.csr_matrix:
    """``[num_users, num_anime]`` float32 CSR, 1 where the user rated the anime."""
    matrix = sp.csr_matrix((np.ones(len(users), np.float32), (np.asarray(users), np.asarray(anime))),
                           shape=(num_users, num_anime), dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def rating_matrix(users: np.ndarray, anime: np.ndarray, rating: np.ndarray, num_users: int,
                  num_anime: int) -> sp.csr_matrix:
    """``[num_users, num_anime]`` float32 CSR of each (user, anime)'s rating, with the same entries, in the same
    order, as :func:`interaction_matrix` of the same pairs (a pair listed twice gets its mean rating)."""
    shape = (num_users, num_anime)
    pairs = (np.asarray(users), np.asarray(anime))
    total = sp.csr_matrix((np.asarray(rating, np.float32), pairs), shape=shape, dtype=np.float32)
    count = sp.csr_matrix((np.ones(len(pairs[0]), np.float32), pairs), shape=shape, dtype=np.float32)
    total.sum_duplicates()
    count.sum_duplicates()
    total.data /= count.data
    return total


def weighted_history(ratings: sp.csr_matrix, rating_weight: float) -> sp.csr_matrix:
    """The history rows of ``ratings`` (CSR of ratings): each rated anime weighs ``(rating / the user's mean
    rating) ** rating_weight`` (1 for every one with ``rating_weight`` 0)."""
    history = sp.csr_matrix((np.ones(ratings.nnz, np.float32), ratings.indices, ratings.indptr), shape=ratings.shape)
    if rating_weight:
        counts = np.diff(ratings.indptr)
        means = np.asarray(ratings.sum(axis=1), np.float32).ravel() / np.maximum(counts, 1)
        history.data = entry_weights(ratings.data, np.repeat(means, counts), rating_weight)
    return history


def entry_weights(ratings: np.ndarray, means, rating_weight: float) -> np.ndarray:
    """``(ratings / means) ** rating_weight`` as float32 (ratings 1-10 are > 0)."""
    ratio = np.asarray(ratings, np.float32) / np.maximum(np.asarray(means, np.float32), np.float32(1e-6))
    return np.power(ratio, np.float32(rating_weight), dtype=np.float32)


def gram_matrix(matrix: sp.spmatrix) -> np.ndarray:
    """The lower triangle of ``X'X`` ``[n, n]`` float32 for ``matrix`` ``[users, n]`` (binary): co-rating counts.

    Only the lower triangle (diagonal included) is filled; the upper one is 0, and LAPACK's
    Cholesky reads no more. Each user adds 1 to every pair of anime they rated, straight into the
    dense matrix (a compiled loop on every core; each core owns interleaved bands of rows), so no
    sparse ``[n, n]`` product is ever built. Columns ordered most-rated first run fastest: most
    pairs then land in the first columns of each row, which stay in cache (17.5k anime and 46M
    ratings: 17 s on 2 cores, against 63 s for scipy's sparse product).
    """
    from animerec import kernels  # numba: imported and compiled on first use only

    rows = sp.csr_matrix(matrix)
    rows.sort_indices()
    return kernels.lower_gram(rows.indptr.astype(np.int64), rows.indices.astype(np.int32), rows.shape[1])


def ease_weights(gram: np.ndarray, l2: float, *, overwrite: bool = False) -> np.ndarray:
    """EASE's ``B`` ``[n, n]`` float32 from the Gram matrix ``X'X`` ``[n, n]`` (its lower triangle is read).

    The regularised Gram matrix is inverted through its Cholesky factor in place (LAPACK
    ``potrf``/``potri``), so the peak is two ``[n, n]`` float32 arrays (one with ``overwrite``,
    which consumes ``gram``): 1.2 GB each at 17.5k anime.
    """

    if l2 <= 0:
        raise ConfigError(f"model.ranker.l2 values must be > 0, got {l2}.")
    work = np.ascontiguousarray(gram if overwrite else gram.copy(), dtype=np.float32)
    work[np.diag_indices_from(work)] += np.float32(l2)
    # The lower triangle of C-ordered ``work`` is the upper one of its Fortran-ordered transpose: LAPACK
    # then factors and inverts in place (a C-ordered array would be copied into Fortran order first).
    factor, info = lapack.spotrf(work.T, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise ArithmeticError(f"EASE: the Gram matrix is not positive definite (potrf info {info}); raise l2.")
    factor, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise ArithmeticError(f"EASE: inverting the Gram matrix failed (potri info {info}); raise l2.")
    inverse = factor.T  # C-ordered again, the inverse in its lower triangle (in ``work``'s memory)
    symmetrise_lower(inverse)
    diagonal = np.diag(inverse).copy()
    inverse /= -diagonal[None, :]  # B = -P / diag(P), then a zero diagonal
    inverse[np.diag_indices_from(inverse)] = 0.0
    return inverse


def symmetrise_lower(a: np.ndarray) -> None:
    """Copy the lower triangle of square ``a`` onto its upper one, in place, block by block."""
    n = a.shape[0]
    for start in range(0, n, _BLOCK):
        end = min(n, start + _BLOCK)
        block = a[start:end, start:end]
        block[...] = np.tril(block) + np.tril(block, -1).T
        if end < n:
            a[start:end, end:] = a[end:, start:end].T


def most_rated(counts: np.ndarray, minimum: int = 1) -> np.ndarray:
    """Indices with ``counts >= minimum``, the largest count first (ties: lower index first)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    return order[np.asarray(counts)[order] >= minimum]


def like_rates(anime: np.ndarray, rating: np.ndarray, num_anime: int, threshold: float) -> np.ndarray:
    """``[num_anime]``: each anime's share of ratings >= ``threshold``, shrunk towards the overall share."""
    liked = (np.asarray(rating) >= threshold).astype(np.float64)
    overall = liked.mean() if len(liked) else 0.5
    counts = np.bincount(anime, minlength=num_anime)
    likes = np.bincount(anime, weights=liked, minlength=num_anime)
    rates = (likes + LIKE_PRIOR * overall) / (counts + LIKE_PRIOR)
    return np.maximum(rates, 1e-6).astype(np.float32)  # > 0: a factor never turns -inf into nan


@dataclass
class ItemRanker:
    """EASE scores over a user's history, weighted by how often each anime is liked.

    ``items`` ``[m]`` are the anime indices the weights cover (those with enough ratings, any order),
    ``weights`` ``[m, m]`` EASE's ``B``, ``item_factor`` ``[num_anime]`` the like-rate factor,
    ``history`` ``[num_users, num_anime]`` the anime each user rated in the data the ranker was fitted
    on, each weighing ``(rating / the user's mean rating) ** rating_weight`` (see :func:`weighted_history`).
    """

    FORMAT_VERSION: ClassVar[int] = 2  # 2: no rating_power (version 1 heads that had one rank without it)

    items: np.ndarray
    weights: np.ndarray
    item_factor: np.ndarray
    history: sp.csr_matrix
    rating_weight: float = 0.0  # exponent of a rated anime's weight in a history row (see weighted_history)

    @property
    def num_anime(self) -> int:
        return len(self.item_factor)

    def score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        """Scores ``[n, num_anime]`` for history rows ``[n, num_anime]`` (binary), higher first."""
        scores = np.zeros((rows.shape[0], self.num_anime), dtype=np.float32)
        scores[:, self.items] = np.maximum(np.asarray(rows[:, self.items] @ self.weights), 0.0)
        scores *= self.item_factor[None, :]
        return scores

    def rank_users(self, user_index: np.ndarray) -> np.ndarray:
        """Scores ``[len(user_index), num_anime]``; anime in a user's history get -inf (never candidates)."""
        rows = self.history[np.asarray(user_index, dtype=np.int64)]
        scores = self.score_rows(rows)
        row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        scores[row_of, rows.indices] = -np.inf
        return scores

    def fold_in(self, anime_index: np.ndarray, ratings: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[num_anime]`` for someone who rated ``anime_index`` (not a known user); those get -inf.

        ``ratings`` (1-10, one per anime) weigh the entries of the history row as a known user's are weighed
        (:func:`weighted_history`), so a known user's list folded in ranks as that user does.
        """
        anime_index = np.asarray(anime_index, dtype=np.int64)
        values = np.ones(len(anime_index), np.float32)
        if ratings is not None and self.rating_weight and len(anime_index):
            ratings = np.asarray(ratings, np.float32)
            values = entry_weights(ratings, ratings.mean(), self.rating_weight)
        anime_index, first = np.unique(anime_index, return_index=True)
        row = sp.csr_matrix((values[first], (np.zeros(len(anime_index), np.int64), anime_index)),
                            shape=(1, self.num_anime))
        scores = self.score_rows(row)[0]
        scores[anime_index] = -np.inf
        return scores

    # storage --------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {"items": self.items.astype(np.int32), "weights": self.weights, "item_factor": self.item_factor,
                "history_indptr": self.history.indptr.astype(np.int64),
                "history_indices": self.history.indices.astype(np.int32),
                "history_shape": np.array(self.history.shape, dtype=np.int64),
                "rating_weight": np.float32(self.rating_weight),
                **({"history_data": self.history.data.astype(np.float32)} if self.rating_weight else {})}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "ItemRanker":
        if float(arrays.get("rating_power", 0.0)):
            logger.warning("This ranking head was stored with rating_power %g, a factor this release no longer "
                           "applies (it never cleared cross-validation): it ranks by EASE alone. Retrain to refresh "
                           "it.", float(arrays["rating_power"]))
        indices = arrays["history_indices"]
        data = arrays.get("history_data")  # heads of rating_weight 0 (and older ones) store no weights: all 1
        history = sp.csr_matrix((np.ones(len(indices), np.float32) if data is None else np.asarray(data, np.float32),
                                 indices, arrays["history_indptr"]), shape=tuple(int(x) for x in arrays["history_shape"]))
        return cls(arrays["items"].astype(np.int64), np.asarray(arrays["weights"], np.float32),
                   np.asarray(arrays["item_factor"], np.float32), history, float(arrays.get("rating_weight", 0.0)))


class RankerData:
    """The binary history of one or more splits and the anime with enough ratings to get EASE weights."""

    def __init__(self, frames: pd.DataFrame | list[pd.DataFrame], num_users: int, num_anime: int,
                 min_item_ratings: int, relevance_threshold: float) -> None:
        frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)

        def column(name: str, dtype) -> np.ndarray:
            return np.concatenate([f[name].to_numpy(dtype) for f in frames])

        users, anime, rating = column("user_index", np.int32), column("anime_index", np.int32), column("rating", np.float32)
        self.ratings = rating_matrix(users, anime, rating, num_users, num_anime)
        del users
        self.history = weighted_history(self.ratings, 0.0)  # who rated what: the same index arrays, all 1
        counts = np.bincount(self.history.indices, minlength=num_anime)
        # most-rated first (the Gram matrix builds fastest in that order; see gram_matrix)
        self.items = most_rated(counts, min_item_ratings)
        self.rates = like_rates(anime, rating, num_anime, relevance_threshold)

    def ranker(self, l2: float, like_weight: float = 0.0, rating_weight: float = 0.0) -> ItemRanker:
        """The head for one setting. EASE inverts the Gram matrix in its own memory: one ``[m, m]`` float32 array
        at the peak (1.2 GB at 17.5k anime)."""
        started = time.perf_counter()
        gram = gram_matrix(self.history[:, self.items])
        logger.info("EASE: Gram matrix of %d ratings over %d anime in %.1f s", self.history.nnz, len(self.items),
                    time.perf_counter() - started)
        started = time.perf_counter()
        weights = ease_weights(gram, l2, overwrite=True) if len(self.items) else np.zeros((0, 0), np.float32)
        logger.info("EASE: weights for l2=%g in %.1f s", l2, time.perf_counter() - started)
        return ItemRanker(self.items, weights, (self.rates ** np.float32(like_weight)).astype(np.float32),
                          self.weighted(rating_weight), rating_weight)

    def weighted(self, rating_weight: float) -> sp.csr_matrix:
        """The history with each rated anime weighing ``(rating / the user's mean) ** rating_weight``."""
        return self.history if not rating_weight else weighted_history(self.ratings, rating_weight)
