"""Training arrays, and negatives: anime a user never rated, drawn afresh each epoch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from animerec.bundle import find_sorted
from animerec.config import ModelConfig


class NegativeSampler:
    """Anime a user has not rated, drawn uniformly, ``per_positive`` for each of their ratings.

    ``known`` holds every (user, anime) pair the sampler must never return: all the ratings the
    training knows of (train and validation), not only the batch's. Draws that hit a known pair
    are redrawn until none is left. Each epoch gets fresh negatives (seeded by seed and epoch).
    """

    def __init__(self, known_user: np.ndarray, known_anime: np.ndarray, num_anime: int, per_positive: int, seed: int):
        self.num_anime, self.per_positive, self.seed = int(num_anime), int(per_positive), int(seed)
        self.known = np.unique(np.asarray(known_user, np.int64) * self.num_anime + np.asarray(known_anime, np.int64))
        users, counts = np.unique(np.asarray(known_user, np.int64), return_counts=True)
        self.saturated = users[counts >= self.num_anime]  # users who rated everything get no negatives

    def is_known(self, user: np.ndarray, anime: np.ndarray) -> np.ndarray:
        keys = np.asarray(user, np.int64) * self.num_anime + np.asarray(anime, np.int64)
        return find_sorted(self.known, keys)[1]

    def sample(self, user: np.ndarray, epoch: int, batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(users, anime)`` negatives for the positives of ``user`` ``[n]``: ``[n * per_positive]`` each.

        The draw depends only on the seed, ``epoch`` and ``batch`` (the batch's index when the
        input pipeline samples batch by batch), so a resumed run draws the same negatives.
        """
        rng = np.random.default_rng([self.seed, epoch] if batch is None else [self.seed, epoch, int(batch)])
        users = np.repeat(np.asarray(user, np.int64), self.per_positive)
        if len(self.saturated):
            users = users[~np.isin(users, self.saturated)]
        anime = rng.integers(0, self.num_anime, len(users))
        redraw = self.is_known(users, anime)
        while redraw.any():
            anime[redraw] = rng.integers(0, self.num_anime, int(redraw.sum()))
            redraw[redraw] = self.is_known(users[redraw], anime[redraw])
        return users, anime


@dataclass
class TrainData:
    """One split as parallel arrays: ``user`` and ``anime`` indices ``[n]`` (int32), targets ``[n]``.

    With a ``negatives`` sampler, the input pipeline (:func:`animerec.training.input_pipeline.make_dataset`)
    adds sampled negatives with target ``-1`` to each batch as it is made (the preference head's
    "did not pick"; the rating head ignores them): an epoch's negatives never exist all at once.
    """

    user: np.ndarray
    anime: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None
    negatives: NegativeSampler | None = None

    def __len__(self) -> int:
        return len(self.target)


def train_data(frame, model_cfg: ModelConfig, num_anime: int, seed: int, known=()) -> TrainData:
    """A preprocessed split (``user_index``, ``anime_index``, ``rating_scaled``) as TrainData.

    With ``model.negatives_per_positive`` > 0 it samples negatives, never one of the pairs in
    the split itself or in the ``known`` frames (pass train and valid).
    """
    data = TrainData(frame["user_index"].to_numpy(np.int32), frame["anime_index"].to_numpy(np.int32),
                     frame["rating_scaled"].to_numpy(np.float32))
    per_positive = int(model_cfg.negatives_per_positive)
    if per_positive > 0:
        frames = [frame, *known]
        data.negatives = NegativeSampler(np.concatenate([f["user_index"].to_numpy() for f in frames]),
                                         np.concatenate([f["anime_index"].to_numpy() for f in frames]),
                                         num_anime, per_positive, seed)
    return data
