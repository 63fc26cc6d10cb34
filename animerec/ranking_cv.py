"""The ranking head's settings, chosen by K-fold cross-validation over train + valid, and its fit.

A seeded sample of users (``model.ranker.tune_users``) has its known ratings dealt into K folds;
every other user's ratings always train. For each fold, EASE is fitted on everything but that
fold over the most-rated anime (``tune_items``), and the sampled users are ranked from their other
folds: held-out ratings >= the relevance threshold are relevant, every anime not in the user's other
folds is a candidate (NDCG@k). One eigendecomposition of a fold's Gram matrix serves every L2
(``P = V diag(1 / (s + l2)) V'``), so the L2 grid can be wide enough for a few hundred users and
for 300,000.

L2 takes the best mean over users and folds. Each knob then leaves its neutral value (0) only when
its paired gain over neutral, at the chosen L2 and the knobs chosen before it, has a 95% interval
above zero (:func:`animerec.selection.choose_knob`).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from animerec.config import RankerConfig
from animerec.ease import gram_matrix, most_rated, rating_matrix, weighted_history
from animerec.evaluation import Interactions, UserItems, ranking_metrics
from animerec.memory import phase
from animerec.ranking import LIKE_PRIOR, ItemRanker, RankerData
from animerec.selection import choose_best, choose_knob, deal_folds, sample_users

logger = logging.getLogger(__name__)

KNOBS = ("like_weight", "rating_weight")  # chosen in this order, each at the values chosen before it


class FoldEase:
    """EASE on one fold for every L2 at once, from the eigendecomposition of its Gram matrix ``[m, m]``."""

    def __init__(self, gram_lower: np.ndarray) -> None:
        values, self.vectors = scipy.linalg.eigh(gram_lower, lower=True, driver="evd", overwrite_a=True,
                                                 check_finite=False)
        self.values = np.maximum(values, 0.0).astype(np.float32)

    def scores(self, rows: np.ndarray, l2: float, projected: np.ndarray | None = None) -> np.ndarray:
        """``rows @ B`` ``[n, m]`` for dense history rows ``[n, m]``: ``rows - (rows @ P) / diag(P)``.
        ``projected``: ``rows @ V`` ``[n, m]`` when the caller has it (it does not depend on L2)."""
        inverse = (1.0 / (self.values + np.float32(l2))).astype(np.float32)
        product = (((rows @ self.vectors) if projected is None else projected) * inverse[None, :]) @ self.vectors.T
        diagonal = (self.vectors * self.vectors) @ inverse
        return rows - product / diagonal[None, :]


@dataclass
class Fold:
    """One held-out fold of the sampled users: their other ratings (CSR ``[n, num_anime]``), the held-out ones
    (``user`` = row position), the like-rates without the held-out ratings, and EASE on the rest."""

    rows: sp.csr_matrix
    held: Interactions
    rates: np.ndarray
    ease: FoldEase | None = None
    history: tuple | None = None  # (rating_weight, dense history rows [n, m], their rows @ V): the last one made

    def ndcg(self, items: np.ndarray, l2: float, like_weight: float = 0.0, rating_weight: float = 0.0, *, k: int,
             threshold: float) -> np.ndarray:
        """NDCG@k ``[n]`` of each sampled user on this fold under one setting (NaN: nothing relevant held out).
        The history rows and their projection are made once per ``rating_weight``, for every L2 and like_weight."""
        if self.history is None or self.history[0] != rating_weight:  # the settings come one rating_weight after
            history = weighted_history(self.rows, rating_weight)[:, items].toarray()  # another: one kept at a time
            self.history = rating_weight, history, history @ self.ease.vectors
        _, history, projected = self.history
        scores = np.zeros(self.rows.shape, np.float32)
        scores[:, items] = np.maximum(self.ease.scores(history, l2, projected), 0.0)
        scores *= (self.rates ** np.float32(like_weight))[None, :]
        found = ranking_metrics(lambda users: scores[users], UserItems(self.rows.indptr, self.rows.indices), self.held,
                                k=k, relevance_threshold=threshold, per_user=True)
        out = np.full(self.rows.shape[0], np.nan)
        if found.get("users_evaluated"):
            out[found["users"]] = found["ndcg_values"]
        return out


def _folds(ratings: sp.csr_matrix, tuned: np.ndarray, fold_of: np.ndarray, numbers, threshold: float):
    """Each :class:`Fold` in ``numbers`` of the sampled users ``tuned`` (rows of ``ratings``, CSR of ratings);
    ``fold_of`` ``[nnz of ratings[tuned]]`` is each of their ratings' fold."""
    sub = ratings[tuned]
    row_of = np.repeat(np.arange(len(tuned)), np.diff(sub.indptr))
    counts = np.bincount(ratings.indices, minlength=ratings.shape[1]).astype(np.float64)
    likes = np.bincount(ratings.indices[ratings.data >= threshold], minlength=ratings.shape[1]).astype(np.float64)
    for number in numbers:
        out = fold_of == number
        rows = sp.csr_matrix((sub.data[~out], (row_of[~out], sub.indices[~out])), shape=sub.shape, dtype=np.float32)
        held = Interactions(row_of[out].astype(np.int32), sub.indices[out].astype(np.int32), sub.data[out])
        fold_counts = counts - np.bincount(held.anime, minlength=len(counts))
        fold_likes = likes - np.bincount(held.anime[held.rating >= threshold], minlength=len(counts))
        overall = fold_likes.sum() / max(fold_counts.sum(), 1.0)
        rates = np.maximum((fold_likes + LIKE_PRIOR * overall) / (fold_counts + LIKE_PRIOR), 1e-6).astype(np.float32)
        yield Fold(rows, held, rates)


def cross_validate(cfg: RankerConfig, train: pd.DataFrame, valid: pd.DataFrame, num_users: int, num_anime: int, *,
                   k: int, threshold: float, seed: int, folds: int) -> tuple[dict, dict]:
    """``(setting, report)``: L2 by the best cross-validated NDCG@k, each knob by the rule against noise."""
    columns = {n: np.concatenate([f[n].to_numpy() for f in (train, valid)]) for n in ("user_index", "anime_index", "rating")}
    ratings = rating_matrix(columns["user_index"], columns["anime_index"], columns["rating"], num_users, num_anime)
    del columns
    tuned = sample_users(np.diff(ratings.indptr), folds, cfg.tune_users, seed)
    items = most_rated(np.bincount(ratings.indices, minlength=num_anime))[:cfg.tune_items]
    others = weighted_history(ratings, 0.0).copy()  # its own index arrays: eliminate_zeros rewrites them
    others.data[np.isin(np.repeat(np.arange(num_users), np.diff(others.indptr)), tuned)] = 0.0
    others.eliminate_zeros()
    rest = gram_matrix(others[:, items])  # the users who always train
    del others
    sub = ratings[tuned]
    fold_of = deal_folds(np.repeat(np.arange(len(tuned)), np.diff(sub.indptr)), folds, seed)
    cached = []
    for fold in _folds(ratings, tuned, fold_of, range(folds), threshold):
        started = time.perf_counter()
        fold.ease = FoldEase(rest + gram_matrix(weighted_history(fold.rows, 0.0)[:, items]))
        cached.append(fold)
        logger.info("ranking head: fold %d of %d decomposed in %.1f s", len(cached), folds, time.perf_counter() - started)
    common = dict(k=k, threshold=threshold)

    @functools.cache  # a knob's neutral value at the settings chosen before it was scored already
    def scored(l2: float, like_weight: float = 0.0, rating_weight: float = 0.0) -> np.ndarray:
        return np.stack([fold.ndcg(items, l2, like_weight, rating_weight, **common) for fold in cached])

    def table(l2: float, like_weight: float = 0.0, rating_weight: float = 0.0) -> np.ndarray:
        return scored(float(l2), float(like_weight), float(rating_weight))  # one cache key per setting

    l2, l2_report = choose_best({l2: table(l2=l2) for l2 in cfg.l2}, seed)
    setting, report = {"l2": float(l2)}, {"l2": l2_report, "users": int(len(tuned)), "items": int(len(items)),
                                          "folds": folds}
    for knob in KNOBS:
        chosen, report[knob] = choose_knob(0.0, {value: table(**{**setting, knob: value})
                                                 for value in sorted({0.0, *getattr(cfg, knob)})}, seed)
        setting[knob] = float(chosen)
    return setting, report


@dataclass
class RankerFit:
    """What :func:`fit_ranker` returns: the head to store (fitted on train + valid), the report of the choice,
    and what ``score_tuned`` returned for the chosen setting fitted on train only (None without it)."""

    ranker: ItemRanker
    report: dict
    tuned_result: Any = None


def fit_ranker(cfg: RankerConfig, train: pd.DataFrame, valid: pd.DataFrame, num_users: int, num_anime: int, *,
               k: int = 10, relevance_threshold: float = 8.0, seed: int = 0, folds: int = 5,
               score_tuned: Callable[[ItemRanker], Any] | None = None) -> RankerFit:
    """Choose the head's settings by K-fold cross-validation over train + valid (:func:`cross_validate`), then
    fit it on both.

    Without a grid to choose from (or without valid ratings), each grid's first value is taken.
    ``score_tuned(head)`` runs on the chosen setting fitted on train only (the valid split's metrics), before the fit
    on train + valid.
    """
    started = time.perf_counter()
    report: dict[str, Any] = {}
    grids = (cfg.l2, cfg.like_weight, cfg.rating_weight)
    if any(len(set(grid)) > 1 for grid in grids) and len(valid):
        with phase("the ranking head's cross-validation"):
            setting, report = cross_validate(cfg, train, valid, num_users, num_anime, k=k,
                                             threshold=relevance_threshold, seed=seed, folds=folds)
    else:
        setting = dict(zip(("l2", "like_weight", "rating_weight"), (float(g[0]) for g in grids)))
    tuned_result = None
    if score_tuned is not None:
        tuned_result = score_tuned(RankerData(train, num_users, num_anime, relevance_threshold).ranker(**setting))
    with phase("the ranking head's fit on train + valid"):
        ranker = RankerData([train, valid], num_users, num_anime, relevance_threshold).ranker(**setting)
    report.update(chosen=setting, items=int(len(ranker.items)), fit_seconds=time.perf_counter() - started)
    how = f"chosen by {folds}-fold cross-validation" if "l2" in report else "each grid's first value"
    logger.info("Ranker: EASE %s over %d anime (%s), fitted on train + valid in %.1f s", setting, len(ranker.items),
                how, report["fit_seconds"])
    return RankerFit(ranker, report, tuned_result)
