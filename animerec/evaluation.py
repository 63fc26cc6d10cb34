"""Honest evaluation on the test split.

Rating error: RMSE and MAE on the original 1-10 scale. Ranking: for each test user with at
least one relevant test item (rated >= ``relevance_threshold``), every anime the user has not
rated in the splits passed as ``known`` (train and valid) is a candidate; recall@k =
hits / min(k, relevant) (the definition used in the literature, so a perfect ranking scores 1
however many relevant items there are), NDCG@k with binary gains.
Any scorer of shape ``score(user_indices) -> [len(users), num_anime]`` can be ranked the same
way, so the popularity baseline and peers are measured on the same split and candidates.
:func:`evaluate` is the train step's whole evaluation (test metrics next to the baselines, and the
valid split's as ``valid_*``). Similar anime and similar users have their own yardsticks
(:func:`similar_item_metrics`, :func:`similar_user_metrics`), and :func:`paired_interval` tells a
gain from noise over the same users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from animerec.config import EvaluateConfig


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
    per_user: bool = False,
) -> dict[str, Any]:
    """Mean recall@k and NDCG@k over test users that have relevant items.

    ``train`` holds every rating the model may know of (pass train and valid together): those
    anime are never candidates. recall@k = hits / min(k, relevant). With ``per_user``, also each
    user's values (``users``, ``recall_values``, ``ndcg_values``: for paired intervals between models).
    """
    relevant = _relevant_by_user(test, relevance_threshold)
    users = sample(sorted(relevant), max_users, seed)
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
    found = {f"recall_at_{k}": float(np.mean(recalls)), f"ndcg_at_{k}": float(np.mean(ndcgs)),
             "users_evaluated": int(len(users))}
    if per_user:
        found.update(users=users, recall_values=np.array(recalls), ndcg_values=np.array(ndcgs))
    return found


def popularity_scorer(train: Interactions, num_anime: int) -> Callable[[np.ndarray], np.ndarray]:
    """Most-rated-in-train first, the same list for everyone."""
    counts = np.bincount(train.anime, minlength=num_anime).astype(np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), num_anime))

    return score


# The train step's evaluation: test metrics next to the baselines, and the valid split's ----------------
def evaluate(scorer, bundle_scale: dict, train: pd.DataFrame, test: pd.DataFrame, num_anime: int, eval_cfg: EvaluateConfig,
             valid: pd.DataFrame | None = None, valid_found: dict | None = None) -> dict:
    """Test metrics next to the popularity baseline's, plus the valid split's as ``valid_*``.

    Test candidates are the anime a user rated in neither train nor valid (both are known
    positives); valid candidates exclude the train anime. ``valid_found`` are the valid metrics
    when they were taken already (a ranking head refitted on train and valid: its train-only
    fit scored valid before the refit); model choices (the ``model:best`` alias) read only the
    ``valid_*`` metrics.
    """
    if valid is not None and len(valid) and valid_found is None:
        valid_found = valid_metrics(scorer, bundle_scale, train, valid, eval_cfg)
    train_i, test_i = Interactions.from_frame(train), Interactions.from_frame(test)
    valid_i = Interactions.from_frame(valid) if valid is not None else None
    known = train_i if valid_i is None else Interactions.concat(train_i, valid_i)  # grouped once, used twice
    del valid_i
    metrics = split_metrics(scorer, bundle_scale, known, test_i, eval_cfg)
    popularity = split_metrics(None, bundle_scale, known, test_i, eval_cfg,
                               rank=popularity_scorer(train_i, num_anime))
    del known
    metrics["baselines"] = {
        "popularity": {key: value for key, value in popularity.items() if key != "users_evaluated"},
        "global_mean": split_metrics(None, bundle_scale, train_i, test_i, eval_cfg,
                                     predict=lambda users, anime: np.full(len(users), float(train_i.rating.mean())),
                                     ranking=False),
    }
    metrics.update(valid_found or {})
    metrics["relevance_threshold"] = float(eval_cfg.relevance_threshold)
    metrics["evaluation"] = evaluation_settings(eval_cfg)
    return metrics


def valid_metrics(scorer, bundle_scale: dict, train: pd.DataFrame, valid: pd.DataFrame, eval_cfg: EvaluateConfig) -> dict:
    """The valid split's metrics as ``valid_*`` (train anime are never candidates)."""
    found = split_metrics(scorer, bundle_scale, Interactions.from_frame(train), Interactions.from_frame(valid), eval_cfg)
    return {f"valid_{key}": value for key, value in found.items()}


def evaluation_settings(eval_cfg: EvaluateConfig) -> dict:
    """The settings that make two models' metrics comparable."""
    return {"k": int(eval_cfg.k), "relevance_threshold": float(eval_cfg.relevance_threshold),
            "max_users": eval_cfg.max_users}


def split_metrics(scorer, bundle_scale: dict, known, target, eval_cfg: EvaluateConfig, *, rank=None, predict=None,
                  ranking: bool = True) -> dict:
    """RMSE/MAE on the 1-10 scale and recall/NDCG@k on ``target``; ``known`` anime are never candidates."""
    lo, hi = bundle_scale["min"], bundle_scale["max"]
    if predict is None and scorer is not None:
        predict = lambda users, anime: scorer.score_pairs(users, anime) * (hi - lo) + lo  # noqa: E731
    found = {}
    if predict is not None and len(target.rating):
        found.update(rating_errors(predict(target.user, target.anime), target.rating))
    if ranking:
        found.update(ranking_metrics(rank or scorer.rank_users, known, target, k=int(eval_cfg.k),
                                     relevance_threshold=float(eval_cfg.relevance_threshold),
                                     max_users=eval_cfg.max_users))
    return found


# Similar anime and similar users ----------------------------------------------------------------
def _scored(rankings, k: int) -> dict:
    """A callable's answer as ``{name: [k] indices}``: one ranking (name ``""``) or a dict of several."""
    return {name: np.asarray(r)[:k] for name, r in rankings.items()} if isinstance(rankings, dict) \
        else {"": np.asarray(rankings)[:k]}


def _summary(per_user: dict, metric: str, users: list[int]) -> dict:
    """``{metric, users_evaluated, per_user, users}`` for one ranking, or ``{name: that}`` for several."""
    out = {name: {metric: float(np.mean(values)) if values else float("nan"), "users_evaluated": len(values),
                  "per_user": np.asarray(values), "users": np.asarray(users[:len(values)], np.int64)}
           for name, values in per_user.items()}
    return out[""] if set(out) == {""} else out


def sample(users, max_users: int | None, seed: int) -> np.ndarray:
    """A seeded sample of ``max_users`` of ``users`` (all of them when there are no more), sorted: the one way
    the metrics and the cross-validations pick the users they score."""
    users = np.asarray(users, dtype=np.int64)
    if max_users and len(users) > max_users:
        users = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    return np.sort(users)


def similar_item_metrics(
    similar: Callable[[int, np.ndarray, int], np.ndarray | dict],
    history: Interactions,
    target: Interactions,
    *,
    k: int = 10,
    relevance_threshold: float = 8,
    queries: int = 3,
    excluded: np.ndarray | None = None,
    seed: int = 0,
    max_users: int | None = None,
) -> dict:
    """Item-to-item hit@k: do an anime's neighbours hold what the same person went on to love?

    For each user with liked ``target`` anime, up to ``queries`` anime they liked in ``history``
    (rating >= ``relevance_threshold``, a seeded draw) are the queries. ``similar(query, exclude,
    k)`` returns the ``k`` anime indices most similar to ``query``, never ``query`` nor the indices
    in ``exclude`` (the user's history), or a dict of several such rankings (each is scored: one
    pass serves a grid of settings). hit@k = liked target anime among them / min(k, liked
    target), averaged over a user's queries, then over users (``per_user`` keeps each user's, in
    user order, for paired intervals). ``excluded`` anime (the tail view's most-rated) are neither
    candidates nor relevant. ``max_users`` evaluates a seeded sample of users.
    """
    rng = np.random.default_rng(seed)
    relevant = _relevant_by_user(target, relevance_threshold)
    liked = _relevant_by_user(history, relevance_threshold)
    removed = np.zeros(0, np.int64) if excluded is None else np.asarray(excluded, np.int64)
    users = [u for u in sorted(relevant) if u in liked and len(np.setdiff1d(relevant[u], removed))]
    users = sample(users, max_users, seed).tolist()
    per_user: dict[str, list] = {}
    for user in users:
        rel = np.setdiff1d(relevant[user], removed)
        picks = rng.choice(liked[user], size=min(queries, len(liked[user])), replace=False)
        exclude = np.union1d(history.items_of(user), removed)
        hits: dict[str, list] = {}
        for q in picks:
            for name, top in _scored(similar(int(q), exclude, k), k).items():
                hits.setdefault(name, []).append(np.isin(top, rel).sum() / min(k, len(rel)))
        for name, values in hits.items():
            per_user.setdefault(name, []).append(float(np.mean(values)))
    return _summary(per_user or {"": []}, f"hit_at_{k}", users)


def popularity_share(similar: Callable[[int, np.ndarray, int], np.ndarray | dict], counts: np.ndarray, *,
                     queries: int = 100, head: int = 50, k: int = 10) -> dict[str, float] | float:
    """How much a similar-anime list leans on what everybody watched: for each of the ``queries`` most-rated anime
    (``counts`` ``[num_anime]`` raters each), the share of its ``k`` most similar anime (``similar`` as for
    :func:`similar_item_metrics`) that are among the ``head`` most-rated; the mean over queries (popularity alone:
    1.0). One value, or ``{name: value}`` for a callable that returns several rankings."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    shares: dict[str, list] = {}
    for q in order[:queries]:
        for name, top in _scored(similar(int(q), np.zeros(0, np.int64), k), k).items():
            shares.setdefault(name, []).append(float(np.isin(top, order[:head]).mean()) if len(top) else 0.0)
    out = {name: float(np.mean(values)) for name, values in shares.items()}
    return out[""] if set(out) == {""} else out


def neighbour_votes(neighbours: np.ndarray, liked_indptr: np.ndarray, liked_anime: np.ndarray,
                    num_anime: int) -> np.ndarray:
    """``[num_anime]``: how many of ``neighbours`` (user indices) liked each anime."""
    parts = [liked_anime[liked_indptr[u]:liked_indptr[u + 1]] for u in neighbours if u + 1 < len(liked_indptr)]
    if not parts:
        return np.zeros(num_anime, np.float32)
    return np.bincount(np.concatenate(parts), minlength=num_anime).astype(np.float32)


def similar_user_metrics(
    neighbours: Callable[[int, int], np.ndarray | dict],
    history: Interactions,
    target: Interactions,
    num_anime: int,
    *,
    k: int = 10,
    relevance_threshold: float = 8,
    num_neighbours: int = 20,
    excluded: np.ndarray | None = None,
    max_users: int | None = None,
    seed: int = 0,
) -> dict:
    """User-to-user recall@k: do a user's nearest users love what the user went on to love?

    ``neighbours(user, n)`` returns the ``n`` user indices most similar to ``user`` (not the user),
    or a dict of several such lists. Anime are scored by how many of them liked the anime in
    ``history`` (ties: lower index); the user's own history is never a candidate; recall@k = hits
    / min(k, liked target anime). ``excluded`` anime are neither candidates nor relevant.
    """
    relevant = _relevant_by_user(target, relevance_threshold)
    liked = history.rating >= relevance_threshold
    indptr, anime = Interactions(history.user[liked], history.anime[liked], history.rating[liked]).by_user()
    removed = np.zeros(0, np.int64) if excluded is None else np.asarray(excluded, np.int64)
    users = [u for u in sorted(relevant) if len(np.setdiff1d(relevant[u], removed))]
    users = sample(users, max_users, seed).tolist()
    per_user: dict[str, list] = {}
    for user in users:
        rel = np.setdiff1d(relevant[user], removed)
        for name, near in _scored(neighbours(int(user), num_neighbours), num_neighbours).items():
            votes = neighbour_votes(near, indptr, anime, num_anime)
            votes[history.items_of(user)] = -1
            votes[removed] = -1
            top = np.lexsort((np.arange(num_anime), -votes))[:k]
            top = top[votes[top] > 0]
            per_user.setdefault(name, []).append(float(np.isin(top, rel).sum() / min(k, len(rel))))
    return _summary(per_user or {"": []}, f"recall_at_{k}", users)


def paired_interval(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same users and its bootstrap interval: ``(mean, low, high)``."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (resamples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
