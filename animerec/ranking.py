"""The ranking head: EASE item-item weights over each user's rated anime (the math: :mod:`animerec.ease`).

``X`` ``[num_users, m]`` is 1 where a user rated an anime (any rating: rating it at all is the signal). A user's scores are their history row times ``B``; a new user's are the same
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
from typing import ClassVar, Mapping, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from animerec.ease import ease_weights, entry_weights, gram_matrix, most_rated, rating_matrix, weighted_history

logger = logging.getLogger(__name__)

LIKE_PRIOR = 10.0  # pseudo-ratings that shrink an anime's like-rate towards the global one


def like_rates(anime: np.ndarray, rating: np.ndarray, num_anime: int, threshold: float) -> np.ndarray:
    """``[num_anime]``: each anime's share of ratings >= ``threshold``, shrunk towards the overall share."""
    liked = (np.asarray(rating) >= threshold).astype(np.float64)
    overall = liked.mean() if len(liked) else 0.5
    counts = np.bincount(anime, minlength=num_anime)
    likes = np.bincount(anime, weights=liked, minlength=num_anime)
    rates = (likes + LIKE_PRIOR * overall) / (counts + LIKE_PRIOR)
    return np.maximum(rates, 1e-6).astype(np.float32)  # > 0: a factor never turns -inf into nan


class RankingHead(Protocol):
    """What the model asks of a ranking head: the bundle stores and loads it, the scorer ranks with it, the reasons
    read its weights. :class:`ItemRanker` (EASE) implements it; a new head implements it too, is listed in
    :data:`HEADS` under the ``model.ranker.kind`` that names it, and is fitted by
    :func:`animerec.ranking_cv.fit_ranker`."""

    KIND: ClassVar[str]  # model.ranker.kind, and model_info.json's "ranker"
    FORMAT_VERSION: ClassVar[int]  # of its stored arrays (ranker.npz)
    history: sp.csr_matrix  # [num_users, num_anime]: what each known user rated, the rows it ranks from

    def rank_users(self, user_index: np.ndarray) -> np.ndarray:
        """Scores ``[len(user_index), num_anime]``, higher first; -inf for the anime a user rated."""

    def fold_in(self, anime_index: np.ndarray, ratings: np.ndarray | None = None) -> np.ndarray:
        """Scores ``[num_anime]`` for someone who rated ``anime_index`` (1-10 ``ratings``), -inf for those."""

    def contributions(self, rated: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``[len(rated), len(targets)]``: how much each rated anime lifts each target (what a reason cites)."""

    def arrays(self) -> dict[str, np.ndarray]: ...

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "RankingHead": ...


@dataclass
class ItemRanker:
    """EASE scores over a user's history, weighted by how often each anime is liked.

    ``items`` ``[m]`` are the anime indices the weights cover (those with enough ratings, any order),
    ``weights`` ``[m, m]`` EASE's ``B``, ``item_factor`` ``[num_anime]`` the like-rate factor,
    ``history`` ``[num_users, num_anime]`` the anime each user rated in the data the ranker was fitted
    on, each weighing ``(rating / the user's mean rating) ** rating_weight`` (see :func:`weighted_history`).
    """

    KIND: ClassVar[str] = "ease"
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

    def contributions(self, rated: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``[len(rated), len(targets)]``: EASE's weight from each rated anime to each target (0 where either has
        no weights)."""
        position = np.full(self.num_anime, -1, np.int64)
        position[self.items] = np.arange(len(self.items))
        rows, cols = position[rated], position[targets]
        out = np.zeros((len(rated), len(targets)))
        have_rows, have_cols = rows >= 0, cols >= 0
        if have_rows.any() and have_cols.any():
            out[np.ix_(have_rows, have_cols)] = self.weights[np.ix_(rows[have_rows], cols[have_cols])]
        return out

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


HEADS: dict[str, type[RankingHead]] = {ItemRanker.KIND: ItemRanker}  # model.ranker.kind -> its class


class RankerData:
    """The binary history of one or more splits and the anime that get EASE weights (every rated one)."""

    def __init__(self, frames: pd.DataFrame | list[pd.DataFrame], num_users: int, num_anime: int,
                 relevance_threshold: float) -> None:
        frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)

        def column(name: str, dtype) -> np.ndarray:
            return np.concatenate([f[name].to_numpy(dtype) for f in frames])

        users, anime, rating = column("user_index", np.int32), column("anime_index", np.int32), column("rating", np.float32)
        self.ratings = rating_matrix(users, anime, rating, num_users, num_anime)
        del users
        self.history = weighted_history(self.ratings, 0.0)  # who rated what: the same index arrays, all 1
        counts = np.bincount(self.history.indices, minlength=num_anime)
        # most-rated first (the Gram matrix builds fastest in that order; see gram_matrix)
        self.items = most_rated(counts)
        self.rates = like_rates(anime, rating, num_anime, relevance_threshold)

    def ranker(self, l2: float, like_weight: float = 0.0, rating_weight: float = 0.0) -> ItemRanker:
        """The head for one setting. EASE inverts the Gram matrix in its own memory: one ``[m, m]`` float32 array
        at the peak (1.2 GB at 17.5k anime)."""
        started = time.perf_counter()
        gram = gram_matrix(self.history[:, self.items])
        logger.debug("EASE: Gram matrix of %d ratings over %d anime in %.1f s", self.history.nnz, len(self.items),
                    time.perf_counter() - started)
        started = time.perf_counter()
        weights = ease_weights(gram, l2, overwrite=True) if len(self.items) else np.zeros((0, 0), np.float32)
        logger.debug("EASE: weights for l2=%g in %.1f s", l2, time.perf_counter() - started)
        return ItemRanker(self.items, weights, (self.rates ** np.float32(like_weight)).astype(np.float32),
                          self.weighted(rating_weight), rating_weight)

    def weighted(self, rating_weight: float) -> sp.csr_matrix:
        """The history with each rated anime weighing ``(rating / the user's mean) ** rating_weight``."""
        return self.history if not rating_weight else weighted_history(self.ratings, rating_weight)
