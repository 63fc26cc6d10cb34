"""Honest evaluation on the test split.

Rating error: RMSE and MAE on the original 1-10 scale. Ranking: for each test user with at
least one relevant test item (rated >= ``relevance_threshold``), every anime the user has not
rated in the splits passed as ``known`` (train and valid) is a candidate; recall@k =
hits / min(k, relevant) (the definition used in the literature, so a perfect ranking scores 1
however many relevant items there are), NDCG@k with binary gains.
Any scorer of shape ``score(user_indices) -> [len(users), num_anime]`` can be ranked the same
way, so the popularity baseline and peers are measured on the same split and candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Interactions:
    """Rows of one split as arrays of ``user`` and ``anime`` indices and 1-10 ``rating``.

    Indices are int32 and ratings float32 (12 bytes a row: 51M known ratings take 0.6 GB).
    :meth:`by_user` groups the anime by user once, CSR-style, and keeps the result.
    """

    user: np.ndarray
    anime: np.ndarray
    rating: np.ndarray

    def __post_init__(self) -> None:
        self._grouped: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_frame(cls, frame) -> "Interactions":
        return cls(frame["user_index"].to_numpy(np.int32), frame["anime_index"].to_numpy(np.int32),
                   frame["rating"].to_numpy(np.float32))

    @classmethod
    def concat(cls, *parts: "Interactions") -> "Interactions":
        """The rows of ``parts`` together (train and valid: every rating a model may know of)."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("user", "anime", "rating")))

    def __len__(self) -> int:
        return len(self.user)

    def by_user(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, anime)``: user ``u``'s anime are ``anime[indptr[u]:indptr[u + 1]]``.

        ``indptr`` ``[max_user + 2]`` int64 and ``anime`` ``[n]`` int32; one stable counting pass,
        so memory is the sorted copy plus one int64 order (computed once, then cached).
        """
        if self._grouped is None:
            counts = np.bincount(self.user, minlength=1) if len(self.user) else np.zeros(1, np.int64)
            indptr = np.zeros(len(counts) + 1, np.int64)
            np.cumsum(counts, out=indptr[1:])
            order = np.argsort(self.user, kind="stable")
            self._grouped = (indptr, self.anime[order])
        return self._grouped

    def items_of(self, user: int) -> np.ndarray:
        indptr, anime = self.by_user()
        return anime[indptr[user]:indptr[user + 1]] if 0 <= user < len(indptr) - 1 else anime[:0]


@dataclass
class UserItems:
    """Each user's anime in CSR form, ``anime[indptr[u]:indptr[u + 1]]``: the known anime
    :func:`ranking_metrics` excludes, taken from arrays that already exist (a CSR history's
    ``indptr`` and ``indices``) instead of a grouped copy."""

    indptr: np.ndarray
    anime: np.ndarray

    def items_of(self, user: int) -> np.ndarray:
        return self.anime[self.indptr[user]:self.indptr[user + 1]] if 0 <= user < len(self.indptr) - 1 else self.anime[:0]


def rating_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    diff = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return {"rmse": float(np.sqrt(np.mean(diff ** 2))), "mae": float(np.mean(np.abs(diff)))}


def _relevant_by_user(test: Interactions, threshold: float) -> dict[int, np.ndarray]:
    mask = test.rating >= threshold
    relevant = Interactions(test.user[mask], test.anime[mask], test.rating[mask])
    indptr, anime = relevant.by_user()
    users = np.flatnonzero(np.diff(indptr))
    return {int(u): anime[indptr[u]:indptr[u + 1]] for u in users}


def ranking_metrics(
    score: Callable[[np.ndarray], np.ndarray],
    train: Interactions | UserItems,
    test: Interactions,
    *,
    k: int = 10,
    relevance_threshold: float = 8,
    max_users: int | None = None,
    seed: int = 0,
    batch_users: int = 512,
) -> dict[str, float]:
    """Mean recall@k and NDCG@k over test users that have relevant items.

    ``train`` holds every rating the model may know of (pass train and valid together): those
    anime are never candidates. recall@k = hits / min(k, relevant).
    """
    relevant = _relevant_by_user(test, relevance_threshold)
    users = np.array(sorted(relevant), dtype=np.int64)
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    if len(users) == 0:
        return {f"recall_at_{k}": float("nan"), f"ndcg_at_{k}": float("nan"), "users_evaluated": 0}
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs = [], []
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        scores = np.array(score(batch), dtype=np.float32, copy=True)
        for row, user in enumerate(batch):
            scores[row, train.items_of(int(user))] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else np.argsort(-scores, axis=1)
        top_scores = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)[:, :k]
        for row, user in enumerate(batch):
            rel = relevant[int(user)]
            hits = np.isin(top[row], rel)
            recalls.append(hits.sum() / min(k, len(rel)))
            ideal = discounts[: min(len(rel), k)].sum()
            ndcgs.append(float((hits * discounts[: len(hits)]).sum() / ideal))
    return {f"recall_at_{k}": float(np.mean(recalls)), f"ndcg_at_{k}": float(np.mean(ndcgs)),
            "users_evaluated": int(len(users))}


def popularity_scorer(train: Interactions, num_anime: int) -> Callable[[np.ndarray], np.ndarray]:
    """Most-rated-in-train first, the same list for everyone."""
    counts = np.bincount(train.anime, minlength=num_anime).astype(np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), num_anime))

    return score


def random_scorer(num_anime: int, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)

    def score(users: np.ndarray) -> np.ndarray:
        return rng.random((len(users), num_anime), dtype=np.float32)

    return score
