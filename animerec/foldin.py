"""Folding a person who was not in the training data into a trained model.

:func:`fold_in` turns an :class:`animerec.profiles.AnimeList` into a :class:`Person`: the anime
the model knows (the rest are skipped and counted), and a user vector ``[d]`` and bias fitted to
the person's ratings with the anime side frozen. The fit is the training loss itself (binary
cross-entropy on min-max scaled ratings for a sigmoid model, squared error for softplus) over the
person's rated anime, minimised with Adam from a closed-form start (the rating-weighted mean of
the anime vectors): :data:`STEPS` steps over ``[m, d]`` in a compiled loop
(:func:`animerec.kernels.adam_fold_in`), a few milliseconds for a 1,000-entry list.

What each recommender does with a :class:`Person`:

- predicted ratings (and the ranking, for a model without a ranking head) come from the
  folded-in vector, exactly as for a trained user;
- a model with the EASE ranking head ranks from the person's rated anime directly
  (:meth:`animerec.ranking.ItemRanker.fold_in`, exact: no fitting at all);
- similar users are the training users whose vectors are closest to the folded-in one.

Nothing on the list is ever recommended back, plan-to-watch entries included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from animerec.bundle import ModelBundle, find_sorted
from animerec.profiles import AnimeList, ListError
from animerec.scoring import _NORM_EPS, Scorer, _activate

logger = logging.getLogger(__name__)

STEPS = 150
LEARNING_RATE = 0.05
BIAS_L2 = 1e-2  # keeps a short list's user bias near the trained users' (which centre on 0)


@dataclass
class Person:
    """Someone folded in from their list, usable wherever the recommenders take a user ID.

    ``listed`` ``[l]``: anime indices on the list that the model knows (never recommended);
    ``rated`` ``[r]`` and ``ratings`` ``[r]``: the rated ones and their 1-10 ratings (the taste
    signal; plan-to-watch entries are listed, never rated); ``vector`` ``[d]``: the folded-in
    user embedding (unit length, like the scorer's user vectors); ``bias``: the user bias (0 for
    a model without biases); ``skipped`` ``[s]``: MAL IDs the model does not know.
    """

    listed: np.ndarray
    rated: np.ndarray
    ratings: np.ndarray
    vector: np.ndarray
    bias: float
    skipped: np.ndarray
    source: str

    def summary(self) -> dict:
        """What the answer reports about the list."""
        return {"source": self.source, "listed": int(len(self.listed) + len(self.skipped)),
                "used": int(len(self.rated)), "skipped": int(len(self.skipped)),
                "skipped_anime_ids": [int(a) for a in self.skipped[:20]]}


def fold_in(bundle: ModelBundle, anime_list: AnimeList) -> Person:
    """The :class:`Person` for ``anime_list``; a clear error when nothing on it is usable.

    The rated anime are the taste signal, as a known user's ratings are: a dropped anime is like any
    other entry (its score, if any, is used; an unscored one is only listed). Drops and low ratings
    as a negative signal cleared no cross-validation (docs/results.md), so they are not one.
    """
    positions, known = find_sorted(bundle.anime_ids, anime_list.anime_ids)
    index = positions[known].astype(np.int64)
    ratings = anime_list.ratings[known].copy()
    signal = ~np.isnan(ratings) & ~anime_list.planned[known]
    skipped = anime_list.anime_ids[~known]
    if not signal.any():
        unknown = f"; {len(skipped)} of its {len(anime_list)} anime are unknown to the model" if len(skipped) else ""
        raise ListError(
            f"Nothing on {anime_list.source} can be used: it needs at least one anime the model knows with a "
            f"rating of 1-10 (plan-to-watch and unrated entries are not a taste signal){unknown}."
        )
    rated, values = index[signal], ratings[signal].astype(np.float32)
    scale_min, scale_max = bundle.scale["min"], bundle.scale["max"]
    target = np.clip((values - scale_min) / max(scale_max - scale_min, 1e-6), 0.0, 1.0)
    vector, bias = fit_user(bundle.scorer, rated, target)
    if len(skipped):
        logger.info("%s: %d of %d anime are unknown to the model and skipped", anime_list.source, len(skipped),
                    len(anime_list))
    return Person(index, rated, values, vector, bias, skipped, anime_list.source)


def fit_user(scorer: Scorer, anime_index: np.ndarray, target: np.ndarray, steps: int = STEPS,
             learning_rate: float = LEARNING_RATE) -> tuple[np.ndarray, float]:
    """A user vector ``[d]`` (unit length) and bias fitted to scaled ``target`` ``[r]`` for ``anime_index`` ``[r]``.

    The anime vectors, anime biases and the Dense unit stay as trained. Binary cross-entropy for
    a sigmoid model (the seed's loss), squared error for softplus. Ratings that are all
    alike (liked titles) say where the person's taste is but not what they dislike: the direction
    is then the mean of the anime vectors, and only the bias is fitted.
    """
    from animerec import kernels  # numba: imported and compiled (or read from its disk cache) on first use

    anime = np.ascontiguousarray(scorer.anime_vectors[anime_index], np.float64)  # [r, d], unit rows
    target = np.asarray(target, np.float64)
    kernel, offset = float(np.ravel(scorer.kernel)[0]), float(np.ravel(scorer.bias)[0])
    base = offset + (scorer.anime_bias[anime_index].astype(np.float64) if scorer.anime_bias is not None
                     else np.zeros(len(target)))  # [r]: the logit's fixed part
    with_bias = scorer.user_bias is not None
    weights = target - target.mean()
    contrast = bool(np.abs(weights).sum() > 1e-6)
    start = weights @ anime if contrast else anime.mean(axis=0)
    if np.linalg.norm(start) < 1e-6:
        start = anime.mean(axis=0) + 1e-3
    params = np.concatenate([start / np.linalg.norm(start), [0.0]])
    _activate(np.zeros(1), scorer.activation)  # an unknown activation: the ConfigError that names the known ones
    kernels.adam_fold_in(anime, target, base, params, kernel, with_bias, contrast,
                         kernels.ACTIVATION_CODES[scorer.activation], steps, learning_rate, BIAS_L2, _NORM_EPS)
    w = params[:-1]
    return (w / np.sqrt(max(float(w @ w), _NORM_EPS))).astype(np.float32), float(params[-1]) if with_bias else 0.0


def person_scores(scorer: Scorer, person: Person) -> np.ndarray:
    """Scaled predictions ``[num_anime]`` for a folded-in person."""

    z = (scorer.anime_vectors @ person.vector) * scorer.kernel + scorer.bias
    if scorer.user_bias is not None:
        z = z + person.bias + scorer.anime_bias
    return _activate(z, scorer.activation)


def person_ranking(scorer: Scorer, person: Person) -> np.ndarray:
    """Ranking scores ``[num_anime]``: the ranking head over the rated anime, else the predictions."""
    if scorer.ranker is not None:
        return scorer.ranker.fold_in(person.rated, person.ratings)
    return person_scores(scorer, person)
