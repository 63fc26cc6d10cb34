"""Choosing settings by K-fold cross-validation, and the rule against noise.

Each user's known ratings (train + valid) are dealt into K folds; each fold is held out once, so
every setting gets a score per (fold, user): an array ``[folds, users]``, NaN where the user has
nothing relevant in that fold. A setting without a neutral value (EASE's L2) takes the best mean;
a knob with a neutral value (0: off) leaves it only when its paired gain over neutral, averaged
over each user's folds, has a 95% bootstrap interval over users above zero.
"""

from __future__ import annotations

from typing import Hashable, Mapping

import numpy as np

from animerec.evaluation import paired_interval, sample

Scores = Mapping[Hashable, np.ndarray]  # setting -> [folds, users] metric, NaN where not scored


def deal_folds(user: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``[n]`` fold (0..folds-1) of each row: each user's rows in a seeded random order, dealt round-robin from a
    random start, so every user has about the same share of their ratings in each fold."""
    user = np.asarray(user, np.int64)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(user)), user))
    ordered = user[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, np.int64)
    rank = np.arange(len(ordered)) - np.repeat(starts, np.diff(np.r_[starts, len(ordered)]))
    offset = rng.integers(0, folds, size=int(user.max()) + 1 if len(user) else 1)
    fold = np.empty(len(user), np.int64)
    fold[order] = (rank + offset[ordered]) % folds
    return fold


def sample_users(counts: np.ndarray, folds: int, max_users: int | None, seed: int) -> np.ndarray:
    """The users (sorted indices) that the folds score: those with at least ``folds`` ratings (``counts`` per
    user), a seeded sample of ``max_users`` of them when there are more (None: all)."""
    return sample(np.flatnonzero(np.asarray(counts) >= folds), max_users, seed)


def per_user(scores: np.ndarray) -> np.ndarray:
    """``[users]``: each user's mean over the folds where they were scored (NaN if none)."""
    scores = np.asarray(scores, np.float64)
    counted = np.isfinite(scores).sum(axis=0)
    total = np.where(np.isfinite(scores), scores, 0.0).sum(axis=0)
    return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)


def mean_score(scores: np.ndarray) -> float:
    """The mean over users of each user's mean over folds."""
    values = per_user(scores)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def paired_gain(a: np.ndarray, b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """``a - b`` per user (over the folds both scored), ``(mean, low, high)``: a 95% bootstrap interval over users."""
    diff = per_user(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    diff = diff[np.isfinite(diff)]
    return paired_interval(diff, np.zeros_like(diff), seed=seed)


def fold_wins(scores: Scores) -> dict[str, int]:
    """How many folds each setting had the best mean score in (ties: the setting listed first)."""
    names = list(scores)
    wins = dict.fromkeys((_label(n) for n in names), 0)
    folds = next(iter(scores.values())).shape[0] if names else 0
    for fold in range(folds):
        means = [np.nanmean(scores[n][fold]) if np.isfinite(scores[n][fold]).any() else -np.inf for n in names]
        wins[_label(names[int(np.argmax(means))])] += 1
    return wins


def choose_best(scores: Scores, seed: int = 0) -> tuple[Hashable, dict]:
    """The setting with the best mean score (ties: the one listed first), and a report of the curve: each
    setting's mean, its paired difference to the best with an interval, and which settings are within noise
    of it (the interval holds zero): how flat the curve is around the choice."""
    means = {name: mean_score(values) for name, values in scores.items()}
    best = max(means, key=lambda n: np.nan_to_num(means[n], nan=-np.inf))
    curve, flat = {}, []
    for name, values in scores.items():
        gain, low, high = paired_gain(values, scores[best], seed)
        curve[_label(name)] = {"mean": means[name], "vs_best": gain, "low": low, "high": high}
        if name == best or not (high < 0):
            flat.append(_label(name))
    return best, {"chosen": _label(best), "curve": curve, "within_noise": flat, "fold_wins": fold_wins(scores)}


def choose_knob(neutral: Hashable, scores: Scores, seed: int = 0) -> tuple[Hashable, dict]:
    """The rule against noise: a value other than ``neutral`` is chosen only when its paired gain over
    ``neutral`` has a 95% interval above zero (of those, the largest mean gain); else ``neutral``.

    The report gives each value's mean, gain over neutral and interval, and the fold wins."""
    chosen, best_gain, values = neutral, 0.0, {}
    for name, value_scores in scores.items():
        gain, low, high = paired_gain(value_scores, scores[neutral], seed) if name != neutral else (0.0, 0.0, 0.0)
        values[_label(name)] = {"mean": mean_score(value_scores), "gain": gain, "low": low, "high": high}
        if name != neutral and low > 0 and gain > best_gain:
            chosen, best_gain = name, gain
    return chosen, {"neutral": _label(neutral), "chosen": _label(chosen), "values": values,
                    "fold_wins": fold_wins(scores)}


def _label(name: Hashable) -> str:
    return f"{name:g}" if isinstance(name, (float, int, np.floating, np.integer)) else str(name)
