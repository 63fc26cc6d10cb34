"""The similar-anime blend, chosen by K-fold cross-validation over train + valid, and the index's fit.

A seeded sample of users (``model.taste.tune_users``) has its known ratings dealt into K folds; for
each fold the parts are fitted on every rating but that fold, and the sampled users are scored on
it by the mean of similar-anime hit@k and its tail view (animerec/evaluation.py). The blend with the
best mean is taken; then each of its parts is dropped again unless its paired gain has a 95%
interval above zero, and the blend is kept only if it beats the neutral one (co-occurrence alone:
item-kNN) the same way.
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
from animerec.evaluation import Interactions, similar_item_metrics
from animerec.memory import phase
from animerec.selection import choose_best, choose_knob, deal_folds, sample_users
from animerec.taste.index import (
    TasteIndex,
    _scaled,
    blend,
    content_matrix,
    ease_neighbours,
    tail_size,
    top_excluding,
    weight_grid,
)

logger = logging.getLogger(__name__)

NEUTRAL = {"cooc": 1.0}  # the peer: co-occurrence cosine alone (item-kNN)
PARTS_DROPPED_FIRST = ("content", "ease", "cooc")


def key(weights: dict, l2: float | None = None) -> str:
    """A blend's name, e.g. ``content=0.05,ease=1,ease_l2=1000`` (parts at weight 0 left out)."""
    name = ",".join(f"{n}={v:g}" for n, v in sorted(weights.items()) if v)
    return name + (f",ease_l2={l2:g}" if l2 is not None and weights.get("ease") else "")


def cross_validate(cfg, frames: list[pd.DataFrame], num_users: int, num_anime: int, *,
                   make_index: Callable[[sp.csr_matrix, np.ndarray], Any], settings: list[tuple],
                   ease_for: Callable[[sp.csr_matrix, np.ndarray], dict], k: int, threshold: float, seed: int,
                   tail: int, folds: int = 5) -> tuple[tuple, dict]:
    """``((weights, ease_l2), report)``: the blend of ``settings`` (``(weights, l2)`` pairs) chosen over K folds.

    ``make_index(history, corated)`` builds a fold's index over its history (binary CSR ``[num_users,
    num_anime]``) and co-rating counts ``[num_anime, num_anime]``; ``ease_for`` gives ``{l2: EASE rows}``.
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
    names = {key(w, l2): (w, l2) for w, l2 in settings}
    table = {name: np.full((folds, len(tuned)), np.nan) for name in names}
    for fold in range(folds):
        started = time.perf_counter()
        out = fold_of == fold
        kept = sp.csr_matrix((ratings.data[~out], (row_of[~out], ratings.indices[~out])), shape=ratings.shape)
        held = Interactions(row_of[out].astype(np.int32), ratings.indices[out].astype(np.int32), ratings.data[out])
        history = weighted_history(kept, 0.0)
        sampled = history[tuned]
        counts = (sampled.T @ sampled).tocoo()  # the sampled users' co-rating counts without this fold: sparse
        corated[counts.row, counts.col] += counts.data
        found = _score_fold(make_index(history, corated), ease_for(history, corated), kept, held, settings, tuned,
                            k=k, threshold=threshold, seed=seed + fold, tail=tail)
        corated[counts.row, counts.col] -= counts.data  # exact: whole counts in float32
        for name, values in found.items():
            table[name][fold, np.searchsorted(tuned, list(values))] = list(values.values())
        logger.info("similar anime: fold %d of %d scored in %.1f s", fold + 1, folds, time.perf_counter() - started)
    (weights, l2), report = decide(table, names, seed)
    report.update(users=int(len(tuned)), folds=folds)
    return (weights, l2), report


def _score_fold(index, ease: dict, kept: sp.csr_matrix, held: Interactions, settings, tuned: np.ndarray, *, k: int,
                threshold: float, seed: int, tail: int) -> dict[str, dict[int, float]]:
    """``{setting: {user: mean of hit@k and its tail view}}`` on one fold, for the sampled users ``tuned``."""
    sampled = kept[tuned]  # only the scored users' histories are read (queries and exclusions)
    history = Interactions(np.repeat(tuned, np.diff(sampled.indptr)).astype(np.int32), sampled.indices.astype(np.int32),
                           sampled.data.astype(np.float32))
    item_parts = functools.lru_cache(maxsize=4096)(index.item_parts)  # both views query the same anime
    most = np.argsort(-np.bincount(kept.indices, minlength=kept.shape[1]), kind="stable")[:tail]

    def similar(q, exclude, n):
        parts, out, exclude = item_parts(q), {}, np.append(exclude, q)
        with_ease = {l2: {**parts, "ease": _scaled(np.asarray(rows[q].todense()).ravel(), q)} for l2, rows in ease.items()}
        for weights, l2 in settings:  # each L2's EASE row made once, for every blend that uses it
            out[key(weights, l2)] = top_excluding(blend(parts if l2 is None else with_ease[l2], weights), exclude, n)
        return out

    merged: dict[str, dict[int, list]] = {}
    for excluded in (None, most):
        views = similar_item_metrics(similar, history, held, k=k, relevance_threshold=threshold, seed=seed,
                                     excluded=excluded)
        for name, view in views.items():
            for user, value in zip(view["users"], view["per_user"]):
                merged.setdefault(name, {}).setdefault(int(user), []).append(value)
    return {name: {user: float(np.mean(v)) for user, v in users.items()} for name, users in merged.items()}


def decide(table: dict, settings: dict, seed: int) -> tuple[tuple, dict]:
    """The best blend by mean; each of its parts kept only if it clears the rule; then the rule against the
    neutral blend (co-occurrence alone)."""
    best, curve = choose_best(table, seed)
    weights, l2 = settings[best]
    report: dict[str, Any] = {"best_by_mean": best, "parts": {}}
    for part in [p for p in PARTS_DROPPED_FIRST if weights.get(p)]:
        reduced = {**weights, part: 0.0}
        name, current = key(reduced, l2), key(weights, l2)
        if name not in table or not any(reduced.values()):
            continue
        chosen, report["parts"][part] = choose_knob(name, {name: table[name], current: table[current]}, seed)
        if chosen == name:
            weights = reduced
    neutral, final = key(NEUTRAL), key(weights, l2)
    if neutral in table and final != neutral:
        chosen, report["vs_neutral"] = choose_knob(neutral, {neutral: table[neutral], final: table[final]}, seed)
        if chosen == neutral:
            weights = dict(NEUTRAL)
    l2 = l2 if weights.get("ease") else None
    report.update(chosen=key(weights, l2), curve=curve)
    return (weights, l2), report


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
    ease_l2 = [float(v) for v in cfg.ease_l2] if any(cfg.item_weights.get("ease", [0.0])) else []
    settings = [(w, l2) for w in weight_grid(cfg.item_weights) for l2 in (ease_l2 if w.get("ease") else [None])]
    content = content_matrix(anime, num_anime) if any(w.get("content") for w, _ in settings) else None

    def ease_for(history, corated):
        return ease_neighbours(history, ease_l2, int(cfg.ease_keep), cfg.ease_items, corated) if ease_l2 else {}

    report: dict[str, Any] = {}
    (weights, chosen_l2) = settings[0]
    if len(settings) > 1:
        with phase("choosing the similar-anime blend by cross-validation"):
            (weights, chosen_l2), report = cross_validate(
                cfg, [train, valid], num_users, num_anime, make_index=lambda h, c: TasteIndex(h, content, corated=c),
                settings=settings, ease_for=ease_for, k=k, threshold=relevance_threshold, seed=seed,
                tail=tail_size(num_anime), folds=folds)
    logger.info("Similar anime: blend %s (ease_l2 %s)", weights, chosen_l2)
    frames = [f for f in (train, valid) if len(f)]
    both = interaction_matrix(np.concatenate([f["user_index"].to_numpy(np.int64) for f in frames]),
                          np.concatenate([f["anime_index"].to_numpy(np.int64) for f in frames]), num_users, num_anime)
    ease_rows = None
    if chosen_l2 is not None:
        with phase("EASE neighbours on train + valid"):
            ease_rows = ease_neighbours(both, [chosen_l2], int(cfg.ease_keep), cfg.ease_items)[chosen_l2]
    index = TasteIndex(both, content if weights.get("content") else None, ease_rows, weights)
    report.update(item_weights=weights, ease_l2=chosen_l2, fit_seconds=time.perf_counter() - started)
    return TasteResult(index, report)
