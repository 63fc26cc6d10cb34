"""The similar-anime blend, chosen by K-fold cross-validation over train + valid, and the index's fit.

A seeded sample of users (``model.taste.tune_users``) has its known ratings dealt into K folds; for
each fold the parts are fitted on every rating but that fold, and the sampled users are scored on
it by the mean of similar-anime hit@k and its tail view (the most-rated anime neither candidates nor
relevant: animerec/evaluation.py). Popularity alone nearly wins that score, and a blend chosen by it
alone became a list of the most-watched anime; so a blend is eligible only if its lists lean on the
most-watched anime no more than co-occurrence alone's do (:func:`animerec.evaluation.popularity_share`,
over the folds). The tail view alone is no fix: it chose content alone on the real sample, which lost
a third of item-kNN's overall hits (docs/results.md). The eligible blend with the best mean is taken;
then content is dropped again unless its paired gain has a 95% interval above zero, and the blend is kept
only if it beats the neutral one (co-occurrence alone: item-kNN) the same way. Co-occurrence is the peer
content is added to, never dropped by the rule: dropping it left content alone on the real sample, which
scores far fewer overall hits than item-kNN. EASE's item weights were a third part; under this choice they
cleared neither real set (their lists lean on the most-watched anime more than item-kNN's), so they left.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from animerec.config import TasteConfig
from animerec.ease import gram_matrix, interaction_matrix, rating_matrix, symmetrise_lower, weighted_history
from animerec.evaluation import Interactions, popularity_share, similar_item_metrics
from animerec.memory import phase
from animerec.selection import choose_best, choose_knob, deal_folds, sample_users
from animerec.taste.index import TasteIndex, blend, content_matrix, tail_size, top_excluding, weight_grid

logger = logging.getLogger(__name__)

NEUTRAL = {"cooc": 1.0}  # the peer: co-occurrence cosine alone (item-kNN)
KNOB = "content"  # co-occurrence is the peer content is added to, not a knob


def key(weights: dict) -> str:
    """A blend's name, e.g. ``content=0.2,cooc=1`` (parts at weight 0 left out)."""
    return ",".join(f"{n}={v:g}" for n, v in sorted(weights.items()) if v)


def cross_validate(cfg, frames: list[pd.DataFrame], num_users: int, num_anime: int, *,
                   make_index: Callable[[sp.csr_matrix, np.ndarray], Any], settings: list[dict], k: int,
                   threshold: float, seed: int, tail: int, folds: int = 5) -> tuple[dict, dict]:
    """``(weights, report)``: the blend of ``settings`` (part -> weight) chosen over K folds.

    ``make_index(history, corated)`` builds a fold's index over its history (binary CSR ``[num_users,
    num_anime]``) and co-rating counts ``[num_anime, num_anime]``.
    """
    columns = {n: np.concatenate([f[n].to_numpy() for f in frames]) for n in ("user_index", "anime_index", "rating")}
    ratings = rating_matrix(columns["user_index"], columns["anime_index"], columns["rating"], num_users, num_anime)
    del columns
    tuned = sample_users(np.diff(ratings.indptr), folds, cfg.tune_users, seed)
    row_of = np.repeat(np.arange(num_users, dtype=np.int32), np.diff(ratings.indptr))
    picked = np.isin(row_of, tuned)
    fold_of = np.full(ratings.nnz, -1, np.int8)
    fold_of[picked] = deal_folds(row_of[picked], folds, seed)
    others = sp.csr_matrix((np.where(picked, 0.0, 1.0).astype(np.float32), ratings.indices, ratings.indptr),
                           shape=ratings.shape)
    others.eliminate_zeros()
    # The co-rating counts of every user who always trains, one dense [num_anime, num_anime] matrix for every fold:
    # each fold adds its sampled users' counts in place and takes them out again (1.2 GB at full MAL size, once).
    corated = gram_matrix(others)
    symmetrise_lower(corated)
    del others
    names = {key(w): w for w in settings}
    table = {name: np.full((folds, len(tuned)), np.nan) for name in names}
    shares = {name: np.zeros(folds) for name in names}
    for fold in range(folds):
        started = time.perf_counter()
        out = fold_of == fold
        kept = sp.csr_matrix((ratings.data[~out], (row_of[~out], ratings.indices[~out])), shape=ratings.shape)
        held = Interactions(row_of[out].astype(np.int32), ratings.indices[out].astype(np.int32), ratings.data[out])
        history = weighted_history(kept, 0.0)
        sampled = history[tuned]
        counts = (sampled.T @ sampled).tocoo()  # the sampled users' co-rating counts without this fold: sparse
        corated[counts.row, counts.col] += counts.data
        found, share = _score_fold(make_index(history, corated), kept, held, settings, tuned, k=k,
                                   threshold=threshold, seed=seed + fold, tail=tail)
        corated[counts.row, counts.col] -= counts.data  # exact: whole counts in float32
        for name, values in found.items():
            table[name][fold, np.searchsorted(tuned, list(values))] = list(values.values())
            shares[name][fold] = share[name]
        logger.info("similar anime: fold %d of %d scored in %.1f s", fold + 1, folds, time.perf_counter() - started)
    weights, report = decide(table, names, seed, {name: float(v.mean()) for name, v in shares.items()})
    report.update(users=int(len(tuned)), folds=folds)
    return weights, report


def _score_fold(index, kept: sp.csr_matrix, held: Interactions, settings, tuned: np.ndarray, *, k: int,
                threshold: float, seed: int, tail: int) -> tuple[dict[str, dict[int, float]], dict[str, float]]:
    """``({setting: {user: mean of hit@k and its tail view}}, {setting: popularity share})`` on one fold, for the
    sampled users ``tuned``."""
    sampled = kept[tuned]  # only the scored users' histories are read (queries and exclusions)
    history = Interactions(np.repeat(tuned, np.diff(sampled.indptr)).astype(np.int32), sampled.indices.astype(np.int32),
                           sampled.data.astype(np.float32))
    item_parts = functools.lru_cache(maxsize=4096)(index.item_parts)  # both views and the share ask again
    counts = np.bincount(kept.indices, minlength=kept.shape[1])
    most = np.argsort(-counts, kind="stable")[:tail]

    def similar(q, exclude, n):
        parts, exclude = item_parts(q), np.append(exclude, q)
        return {key(weights): top_excluding(blend(parts, weights), exclude, n) for weights in settings}

    merged: dict[str, dict[int, list]] = {}
    for excluded in (None, most):
        views = similar_item_metrics(similar, history, held, k=k, relevance_threshold=threshold, seed=seed,
                                     excluded=excluded)
        for name, view in views.items():
            for user, value in zip(view["users"], view["per_user"]):
                merged.setdefault(name, {}).setdefault(int(user), []).append(value)
    scores = {name: {user: float(np.mean(v)) for user, v in users.items()} for name, users in merged.items()}
    return scores, popularity_share(similar, counts, k=k)


def decide(table: dict, settings: dict, seed: int, shares: dict | None = None) -> tuple[dict, dict]:
    """The best blend by mean among those whose popularity share (``shares``: setting -> share) is at most the
    neutral blend's (co-occurrence alone); content kept only if it clears the rule; then the rule against the
    neutral blend."""
    neutral, shares = key(NEUTRAL), dict(shares or {})
    limit = shares.get(neutral, np.inf)
    eligible = {name: values for name, values in table.items() if shares.get(name, 0.0) <= limit}
    best, curve = choose_best(eligible or table, seed)
    weights = settings[best]
    report: dict[str, Any] = {"best_by_mean": best, "parts": {}, "popularity_share": shares}
    reduced = {**weights, KNOB: 0.0}
    if weights.get(KNOB) and key(reduced) in eligible:
        name = key(reduced)
        chosen, report["parts"][KNOB] = choose_knob(name, {name: table[name], best: table[best]}, seed)
        weights = reduced if chosen == name else weights
    if neutral in table and key(weights) != neutral:
        chosen, report["vs_neutral"] = choose_knob(neutral, {neutral: table[neutral], key(weights): table[key(weights)]},
                                                   seed)
        weights = dict(NEUTRAL) if chosen == neutral else weights
    report.update(chosen=key(weights), curve=curve)
    return weights, report


@dataclass
class TasteResult:
    """The fitted index (on train + valid) and what the cross-validation chose."""

    index: TasteIndex
    report: dict


def fit_taste(cfg: TasteConfig, train: pd.DataFrame, valid: pd.DataFrame, num_users: int, num_anime: int,
              anime: pd.DataFrame, *, k: int = 10, relevance_threshold: float = 8.0, seed: int = 42,
              folds: int = 5) -> TasteResult:
    """Choose the similar-anime blend by K-fold cross-validation over train + valid, then
    fit the chosen parts on train + valid."""
    started = time.perf_counter()
    settings = weight_grid(cfg.item_weights)
    content = content_matrix(anime, num_anime) if any(w.get("content") for w in settings) else None
    report: dict[str, Any] = {}
    weights = settings[0]
    if len(settings) > 1:
        with phase("choosing the similar-anime blend by cross-validation"):
            weights, report = cross_validate(
                cfg, [train, valid], num_users, num_anime, make_index=lambda h, c: TasteIndex(h, content, corated=c),
                settings=settings, k=k, threshold=relevance_threshold, seed=seed, tail=tail_size(num_anime),
                folds=folds)
    logger.info("Similar anime: blend %s", weights)
    frames = [f for f in (train, valid) if len(f)]
    both = interaction_matrix(np.concatenate([f["user_index"].to_numpy(np.int64) for f in frames]),
                              np.concatenate([f["anime_index"].to_numpy(np.int64) for f in frames]), num_users,
                              num_anime)
    index = TasteIndex(both, content if weights.get("content") else None, weights)
    report.update(item_weights=weights, fit_seconds=time.perf_counter() - started)
    return TasteResult(index, report)
