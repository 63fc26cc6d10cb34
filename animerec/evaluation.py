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
    """Rows of one split as arrays of ``user`` and ``anime`` indices and 1-10 ``rating``."""

    user: np.ndarray
    anime: np.ndarray
    rating: np.ndarray

    @classmethod
    def from_frame(cls, frame) -> "Interactions":
        return cls(frame["user_index"].to_numpy(np.int64), frame["anime_index"].to_numpy(np.int64),
                   frame["rating"].to_numpy(np.float32))


def rating_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    diff = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return {"rmse": float(np.sqrt(np.mean(diff ** 2))), "mae": float(np.mean(np.abs(diff)))}


def _group(user: np.ndarray, anime: np.ndarray):
    order = np.argsort(user, kind="stable")
    users_sorted, anime_sorted = user[order], anime[order]
    uniq, starts = np.unique(users_sorted, return_index=True)
    ends = np.append(starts[1:], len(users_sorted))
    return {int(u): anime_sorted[s:e] for u, s, e in zip(uniq, starts, ends)}


def ranking_metrics(
    score: Callable[[np.ndarray], np.ndarray],
    train: Interactions,
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
    relevant_mask = test.rating >= relevance_threshold
    relevant = _group(test.user[relevant_mask], test.anime[relevant_mask])
    users = np.array(sorted(relevant), dtype=np.int64)
    if max_users and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    if len(users) == 0:
        return {f"recall_at_{k}": float("nan"), f"ndcg_at_{k}": float("nan"), "users_evaluated": 0}
    seen = _group(train.user, train.anime)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs = [], []
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        scores = np.array(score(batch), dtype=np.float32, copy=True)
        for row, user in enumerate(batch):
            items = seen.get(int(user))
            if items is not None:
                scores[row, items] = -np.inf
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
