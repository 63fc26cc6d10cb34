"""The ranking head: EASE item-item weights over each user's rated anime, chosen on validation.

EASE (Steck, "Embarrassingly Shallow Autoencoders", 2019) learns one item-item matrix ``B``
``[m, m]`` in closed form: ``B = I - P diag(1 / diag(P))`` with ``P = (X'X + l2 I)^-1`` and a zero
diagonal, where ``X`` ``[num_users, m]`` is 1 where a user rated an anime (any rating: rating it at
all is the signal). A user's scores are their history row times ``B``; a new user's are the same
product over the anime they list, so folding anyone in is exact and needs no training.

On MyAnimeList the relevant anime are the ones a user will rate 8 or more, so the score is then
multiplied by ``like_rate ** like_weight``: the anime's shrunk share of ratings >= the relevance
threshold in the training data (``like_weight`` 0 turns it off), and by the rating network's
predicted (scaled) rating of the anime for this user to the power ``rating_power``: EASE says
whether a user will rate an anime, the network how they will rate it (0 turns it off). ``B`` is
fitted on who rated what, but a user's history row weighs each anime they rated by
``(rating / their mean rating) ** rating_weight``: the neighbours of what they loved count more
than those of what they merely finished (0: every rated anime counts 1).

:func:`fit_ranker` picks ``l2`` and ``like_weight`` from their grids on the valid split (NDCG@k of
a ranker fitted on train; the test split is never read), then refits on train and valid together
with the chosen values: the stored ranker knows every rating but the test ones, and ranks a user's
known anime last.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack

from animerec.config import RankerConfig
from animerec.errors import ConfigError
from animerec.evaluation import Interactions, UserItems, ranking_metrics
from animerec.memory import phase

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

    items: np.ndarray
    weights: np.ndarray
    item_factor: np.ndarray
    history: sp.csr_matrix
    rating_power: float = 0.0  # exponent of the network's predicted rating (see personalise)
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

    def personalise(self, scores: np.ndarray, predicted: Callable[[], np.ndarray]) -> np.ndarray:
        """``scores`` (of :meth:`rank_users` or :meth:`fold_in`) times ``predicted() ** rating_power``: the
        network's scaled predicted ratings for the same users (``[n, num_anime]`` or ``[num_anime]``)."""
        if not self.rating_power:
            return scores
        return scores * np.power(predicted(), np.float32(self.rating_power), dtype=np.float32)

    def fold_in(self, anime_index: np.ndarray, weights: np.ndarray | None = None,
                ratings: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[num_anime]`` for someone who rated ``anime_index`` (not a known user); those get -inf.

        ``weights`` (one per anime, default 1) weigh each entry of the history row: a dislike (< 0) can pull
        down. ``ratings`` (1-10, one per anime) weigh the other entries as a known user's are weighed.
        """
        anime_index = np.asarray(anime_index, dtype=np.int64)
        values = np.ones(len(anime_index), np.float32) if weights is None else np.asarray(weights, np.float32)
        if ratings is not None and self.rating_weight and len(anime_index):
            ratings = np.asarray(ratings, np.float32)
            values = np.where(values > 0, values * entry_weights(ratings, ratings.mean(), self.rating_weight), values)
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
                "rating_power": np.float32(self.rating_power), "rating_weight": np.float32(self.rating_weight),
                **({"history_data": self.history.data.astype(np.float32)} if self.rating_weight else {})}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "ItemRanker":
        indices = arrays["history_indices"]
        data = arrays.get("history_data")  # heads of rating_weight 0 (and older ones) store no weights: all 1
        history = sp.csr_matrix((np.ones(len(indices), np.float32) if data is None else np.asarray(data, np.float32),
                                 indices, arrays["history_indptr"]), shape=tuple(int(x) for x in arrays["history_shape"]))
        return cls(arrays["items"].astype(np.int64), np.asarray(arrays["weights"], np.float32),
                   np.asarray(arrays["item_factor"], np.float32), history, float(arrays.get("rating_power", 0.0)),
                   float(arrays.get("rating_weight", 0.0)))


class RankerData:
    """The binary history of one or more splits and the anime with enough ratings to get EASE weights."""

    def __init__(self, frames: pd.DataFrame | list[pd.DataFrame], num_users: int, num_anime: int,
                 min_item_ratings: int, relevance_threshold: float, max_items: int | None = None) -> None:
        """``max_items``: only that many of the most-rated anime get weights (ties: lower index first)."""
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
        self.capped = max_items is not None and len(self.items) > max_items
        self.items = self.items[:max_items]
        self.rates = like_rates(anime, rating, num_anime, relevance_threshold)
        self._gram: np.ndarray | None = None

    def gram(self) -> np.ndarray:
        if self._gram is None:
            started = time.perf_counter()
            self._gram = gram_matrix(self.history[:, self.items])
            logger.info("EASE: Gram matrix of %d ratings over %d anime in %.1f s", self.history.nnz, len(self.items),
                        time.perf_counter() - started)
        return self._gram

    def ranker(self, l2: float, like_weight: float, rating_power: float = 0.0, rating_weight: float = 0.0, *,
               last: bool = False) -> ItemRanker:
        """The ranker for one setting; ``last`` lets EASE consume the cached Gram matrix."""
        gram = self.gram()
        started = time.perf_counter()
        weights = ease_weights(gram, l2, overwrite=last) if len(self.items) else np.zeros((0, 0), np.float32)
        del gram
        logger.info("EASE: weights for l2=%g in %.1f s", l2, time.perf_counter() - started)
        if last:
            self._gram = None
        return ItemRanker(self.items, weights, (self.rates ** np.float32(like_weight)).astype(np.float32),
                          self.weighted(rating_weight), rating_power, rating_weight)

    def weighted(self, rating_weight: float) -> sp.csr_matrix:
        """The history with each rated anime weighing ``(rating / the user's mean) ** rating_weight``."""
        return self.history if not rating_weight else weighted_history(self.ratings, rating_weight)


@dataclass
class RankerFit:
    """What :func:`fit_ranker` returns.

    ``ranker`` is the one to store (refitted on train and valid); ``tuned`` is the chosen setting
    fitted on train only, the one to score the valid split with (it never saw those ratings);
    ``report`` has the chosen values, their valid metrics and one row per setting tried. With a
    ``score_tuned`` callback, ``tuned`` is None and ``tuned_result`` holds what the callback
    returned (the train-only head is dropped before the refit: one [m, m] matrix less at the peak).
    """

    ranker: ItemRanker
    tuned: ItemRanker | None
    report: dict
    tuned_result: Any = None


def _memoised(score: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``score`` computed once per batch of users: every like_weight re-ranks the same EASE scores."""
    cache: dict[bytes, np.ndarray] = {}

    def lookup(users: np.ndarray) -> np.ndarray:
        key = np.asarray(users, np.int64).tobytes()
        if key not in cache:
            cache[key] = score(users)
        return cache[key]

    return lookup


def _choose_on_valid(data: RankerData, train: pd.DataFrame, valid: pd.DataFrame, grid_l2: list[float],
                     grid_like: list[float], grid_power: list[float], grid_weight: list[float], predicted, *, k: int,
                     relevance_threshold: float, tune_users, seed: int):
    """``(l2, like_weight, rating_power, rating_weight, ranker, rows)``: the setting with the best valid NDCG@k,
    its ranker fitted on train.

    In two passes: every L2 with every like-rate weight at the first rating power and rating weight (one
    inversion per L2), then the other rating powers and rating weights with every like-rate weight at the
    chosen L2 (no inversion). The L2 grid can then be wide enough for a few hundred users and for 300,000 at
    a few seconds per value. Its own function so that the valid split's grouped arrays are freed before the
    refit.
    """

    # the anime each user rated in train: the history's own CSR arrays, not a grouped copy of the frame
    train_i, valid_i = UserItems(data.history.indptr, data.history.indices), Interactions.from_frame(valid)
    rows: list[dict] = []
    best: dict = {"score": -np.inf}

    def score(l2: float, base: ItemRanker, raw, like_weight: float, power: float) -> None:
        factor = (data.rates ** np.float32(like_weight)).astype(np.float32)
        head = dataclasses.replace(base, item_factor=factor, rating_power=power)
        # the network's predictions are not memoised: a [batch, num_anime] product is cheap, and a cache of
        # them for 5,000 tuning users would hold 350 MB more at full MyAnimeList size
        found = ranking_metrics(lambda users: head.personalise(raw(users) * factor[None, :], lambda: predicted(users)),
                                train_i, valid_i, k=k, relevance_threshold=relevance_threshold, max_users=tune_users,
                                seed=seed)
        setting = (l2, like_weight, power, base.rating_weight)
        rows.append({"l2": l2, "like_weight": like_weight, "rating_power": power, "rating_weight": base.rating_weight,
                     **found})
        logger.info("ranker l2=%g like_weight=%g rating_power=%g rating_weight=%g: valid NDCG@%d %.4f recall@%d %.4f",
                    *setting, k, found[f"ndcg_at_{k}"], k, found[f"recall_at_{k}"])
        value = np.nan_to_num(found[f"ndcg_at_{k}"], nan=-1.0)
        if value > best["score"]:  # ties keep the values tried first
            best.update(score=value, setting=setting, head=head, base=base, raw=raw)

    for number, l2 in enumerate(grid_l2):
        base = data.ranker(l2, 0.0, rating_weight=grid_weight[0], last=number == len(grid_l2) - 1)
        raw = _memoised(base.rank_users)
        for like_weight in grid_like:
            score(l2, base, raw, like_weight, grid_power[0])
        base = raw = None  # this L2's weights are freed before the next inversion unless they are the best's
    l2, chosen, chosen_raw = best["setting"][0], best["base"], best["raw"]
    for weight in grid_weight:  # the same EASE weights over another weighing of the history rows
        if weight == chosen.rating_weight:  # the first pass's head: its scores are memoised already
            base, raw = chosen, chosen_raw
        else:
            base = dataclasses.replace(chosen, history=data.weighted(weight), rating_weight=weight)
            raw = _memoised(base.rank_users)
        for power in grid_power:
            if (power, weight) == (grid_power[0], grid_weight[0]):
                continue  # scored in the first pass
            for like_weight in grid_like:
                score(l2, base, raw, like_weight, power)
        base = raw = None
    return (*best["setting"], best["head"], rows)


def fit_ranker(ranker_cfg: RankerConfig, train: pd.DataFrame, valid: pd.DataFrame, num_users: int,
               num_anime: int, *, k: int = 10, relevance_threshold: float = 8.0, seed: int = 0,
               score_tuned: Callable[[ItemRanker], Any] | None = None,
               predicted: Callable[[np.ndarray], np.ndarray] | None = None) -> RankerFit:
    """Choose ``l2``, ``like_weight``, ``rating_power`` and ``rating_weight`` on ``valid`` (NDCG@k), then refit on
    train + valid.

    Each ``l2`` costs one Cholesky inversion; the other values re-rank its scores. With ``tune_items``, the
    grid's heads cover only that many of the most-rated anime (the inversion's cost grows with the cube of the
    anime it covers: at full MyAnimeList size 17.5k anime cost 37 s, 4,000 under 1 s), so the valid choice is
    cheap and one full inversion remains (the refit, or the train-only head without one); ``tuned`` is then
    the subset's head, whose valid metrics are those of a head that gives the other anime no score. ``predicted(users)``
    gives the rating network's scaled predictions ``[n, num_anime]`` (trained on train); without it the
    ``rating_power`` grid is [0]. ``score_tuned(tuned)`` runs on the chosen train-only ranker before the
    refit (see RankerFit).
    """
    grid_l2 = [float(v) for v in ranker_cfg.l2]
    grid_like = [float(v) for v in ranker_cfg.like_weight]
    grid_power = [float(v) for v in ranker_cfg.rating_power] if predicted is not None else [0.0]
    grid_weight = [float(v) for v in ranker_cfg.rating_weight]
    min_items = int(ranker_cfg.min_item_ratings)
    refit = bool(ranker_cfg.refit)
    started = time.perf_counter()
    rows: list[dict] = []
    tuned_items = None
    if max(len(grid_l2), len(grid_like), len(grid_power), len(grid_weight)) > 1 and len(valid):
        # the grid's inversions over the most-rated anime only (each costs the cube of the anime it covers);
        # the chosen setting is then fitted once over every anime with enough ratings
        data = RankerData(train, num_users, num_anime, min_items, relevance_threshold, ranker_cfg.tune_items)
        tuned_items = len(data.items) if data.capped else None
        with phase("the ranking head's choice on valid"):
            l2_best, like_best, power_best, weight_best, tuned, rows = _choose_on_valid(
                data, train, valid, grid_l2, grid_like, grid_power, grid_weight, predicted, k=k,
                relevance_threshold=relevance_threshold, tune_users=ranker_cfg.tune_users, seed=seed)
        if data.capped and not refit:
            tuned = None  # chosen over a subset of the anime: the stored train-only head covers them all
    else:
        l2_best, like_best, power_best, weight_best = grid_l2[0], grid_like[0], grid_power[0], grid_weight[0]
        tuned = None
    if tuned is None and (score_tuned is not None or not refit):
        tuned = RankerData(train, num_users, num_anime, min_items, relevance_threshold).ranker(
            l2_best, like_best, power_best, weight_best, last=True)
    data = None
    tuned_result = None
    if score_tuned is not None:
        tuned_result = score_tuned(tuned)
        if refit:
            tuned = None
    if refit:
        with phase("the ranking head's refit"):
            ranker = RankerData([train, valid], num_users, num_anime, min_items, relevance_threshold).ranker(
                l2_best, like_best, power_best, weight_best, last=True)
    else:
        ranker = tuned
    report = {"l2": l2_best, "like_weight": like_best, "rating_power": power_best, "rating_weight": weight_best,
              "items": int(len(ranker.items)),
              "tuned_items": tuned_items,
              "fit_seconds": time.perf_counter() - started, "grid": rows,
              "refit_on": "train+valid" if refit else "train"}
    logger.info("Ranker: EASE l2=%g, like_weight=%g, rating_power=%g, rating_weight=%g over %d anime (chosen on valid), "
                "fitted on %s in %.1f s", l2_best, like_best, power_best, weight_best, len(ranker.items),
                report["refit_on"], report["fit_seconds"])
    return RankerFit(ranker, tuned, report, tuned_result)
