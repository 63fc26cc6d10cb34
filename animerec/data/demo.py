"""The embedded demo set: the real 2020 MAL catalogue and synthetic, learnable ratings.

Ratings are made deterministically from a seed. Each synthetic user has a taste profile: two
or three loved genres, one disliked genre and a preference over types. Which anime a user
watches follows MAL popularity (Members) tilted by that taste; the rating follows the anime's
MAL score, the user's taste and a personal bias, giving MAL's skew (mostly 6-10). Rows carry
``watching_status`` and ``watched_episodes`` as in the real animelist.csv, including
plan-to-watch rows and unrated (0) rows, so the preprocessing filters have real work to do.
A user who loves Mecha watches and rates Mecha highly: a model can learn that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.errors import ConfigError

logger = logging.getLogger(__name__)

CATALOGUE_RESOURCE = "anime_2020.csv.gz"
STATUS_WATCHING, STATUS_COMPLETED, STATUS_ON_HOLD, STATUS_DROPPED, STATUS_PLAN_TO_WATCH = 1, 2, 3, 4, 6


def catalogue_path() -> Path:
    """Path of the bundled 2020 catalogue (17,562 anime, Kaggle 2020 layout, gzip)."""
    return Path(str(resources.files("animerec.data") / "resources" / CATALOGUE_RESOURCE))


@dataclass(frozen=True)
class DemoSpec:
    num_users: int = 1500
    min_ratings_per_user: int = 30
    max_ratings_per_user: int = 200
    min_members: int = 5000
    seed: int = 42

    def validate(self) -> None:
        if self.num_users < 1:
            raise ConfigError(f"data.demo.num_users must be at least 1, got {self.num_users}.")
        if not 1 <= self.min_ratings_per_user <= self.max_ratings_per_user:
            raise ConfigError(
                "data.demo.min_ratings_per_user must be at least 1 and at most data.demo.max_ratings_per_user "
                f"(got {self.min_ratings_per_user} and {self.max_ratings_per_user})."
            )


def make_ratings(anime: pd.DataFrame, spec: DemoSpec) -> pd.DataFrame:
    """Synthetic ratings in the animelist.csv layout for a canonical catalogue (see layouts.load_anime).

    Returns columns ``user_id, anime_id, rating, watching_status, watched_episodes``.
    """
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    pool = anime[(anime["members"] >= spec.min_members) & anime["type"].notna() & (anime["genres"] != "")]
    pool = pool.reset_index(drop=True)
    if len(pool) < spec.max_ratings_per_user:
        raise ConfigError(
            f"Only {len(pool)} anime have at least data.demo.min_members={spec.min_members} members; "
            f"lower it or data.demo.max_ratings_per_user ({spec.max_ratings_per_user})."
        )
    genre_lists = pool["genres"].str.split(", ")
    genres = sorted({g for gs in genre_lists for g in gs})
    genre_pos = {g: i for i, g in enumerate(genres)}
    membership = np.zeros((len(pool), len(genres)), dtype=np.float32)
    for row, gs in enumerate(genre_lists):
        membership[row, [genre_pos[g] for g in gs]] = 1.0
    membership /= np.sqrt(membership.sum(axis=1, keepdims=True))
    types = sorted(pool["type"].unique())
    type_index = pool["type"].map({t: i for i, t in enumerate(types)}).to_numpy()

    # Taste profiles: loved genres drawn by how common they are, one disliked genre, type leaning.
    genre_freq = (membership > 0).sum(axis=0).astype(float)
    genre_p = genre_freq / genre_freq.sum()
    taste = np.zeros((spec.num_users, len(genres)), dtype=np.float32)
    for user in range(spec.num_users):
        loved = rng.choice(len(genres), size=rng.integers(2, 4), replace=False, p=genre_p)
        taste[user, loved] = rng.uniform(1.5, 2.5, size=len(loved))
        disliked = rng.choice(np.setdiff1d(np.arange(len(genres)), loved))
        taste[user, disliked] = -2.5
    type_taste = rng.normal(0.0, 0.6, size=(spec.num_users, len(types))).astype(np.float32)
    if "TV" in types:
        type_taste[:, types.index("TV")] += 0.8
    user_bias = rng.normal(0.0, 0.7, size=spec.num_users)

    popularity = np.log(pool["members"].to_numpy(dtype=float))
    popularity = (popularity - popularity.mean()) / popularity.std()
    mal_score = pool["score"].fillna(pool["score"].median()).to_numpy(dtype=float)
    episodes = pool["episodes"].fillna(12).clip(lower=1).to_numpy(dtype=float)

    counts = np.exp(rng.uniform(np.log(spec.min_ratings_per_user), np.log(spec.max_ratings_per_user + 1), spec.num_users))
    counts = np.clip(counts.astype(int), spec.min_ratings_per_user, spec.max_ratings_per_user)
    user_ids = np.sort(rng.choice(np.arange(spec.num_users * 5), size=spec.num_users, replace=False))

    parts = []
    for start in range(0, spec.num_users, 500):
        users = np.arange(start, min(start + 500, spec.num_users))
        affinity = taste[users] @ membership.T + type_taste[users][:, type_index]  # [users, pool]
        logits = 0.8 * popularity[None, :] + 2.5 * affinity
        gumbel = rng.gumbel(size=logits.shape)
        keys = logits + gumbel
        # Ratings follow taste relative to what the user typically watches, so they keep MAL's skew.
        aff_mean = (np.exp(logits - logits.max(axis=1, keepdims=True)) * affinity).sum(axis=1) / np.exp(
            logits - logits.max(axis=1, keepdims=True)
        ).sum(axis=1)
        for row, user in enumerate(users):
            n = counts[user]
            chosen = np.argpartition(-keys[row], n - 1)[:n]
            aff = affinity[row, chosen]
            raw = mal_score[chosen] + 0.3 + 1.0 * (aff - aff_mean[row]) + user_bias[user] + rng.normal(0.0, 1.0, size=n)
            rating = np.clip(np.rint(raw), 1, 10).astype(np.int64)
            status = rng.choice(
                [STATUS_COMPLETED, STATUS_WATCHING, STATUS_ON_HOLD, STATUS_DROPPED, STATUS_PLAN_TO_WATCH],
                size=n,
                p=[0.8, 0.07, 0.04, 0.04, 0.05],
            )
            watched = episodes[chosen].copy()
            partial = np.isin(status, [STATUS_WATCHING, STATUS_ON_HOLD, STATUS_DROPPED])
            watched[partial] = np.floor(watched[partial] * rng.uniform(0.05, 0.95, size=partial.sum()))
            dropped = status == STATUS_DROPPED
            rating[dropped] = np.clip(rating[dropped] - 3, 1, 10)
            plan = status == STATUS_PLAN_TO_WATCH
            watched[plan] = 0
            rating[plan] = 0
            unrated = (status == STATUS_WATCHING) & (rng.random(n) < 0.3)
            rating[unrated] = 0
            parts.append(
                pd.DataFrame(
                    {
                        "user_id": user_ids[user],
                        "anime_id": pool["anime_id"].to_numpy()[chosen],
                        "rating": rating,
                        "watching_status": status,
                        "watched_episodes": watched.astype(np.int64),
                    }
                )
            )
    ratings = pd.concat(parts, ignore_index=True)
    logger.info(
        "Demo ratings: %d rows, %d users, %d anime (seed %d)",
        len(ratings), spec.num_users, ratings["anime_id"].nunique(), spec.seed,
    )
    return ratings
