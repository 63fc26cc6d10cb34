"""The embedded demo set: the real 2020 MAL catalogue and ratings resampled from real people.

Ratings are made deterministically from a seed. Each synthetic user starts from the list of one
of 291 real MyAnimeList users (``resources/real_profiles.csv.gz``: the anonymised public ratings
of the Kaggle 2020 dataset's users that ``tests/fixtures`` also holds): a random share of that
list, a few anime from the list of the real user who shares most with it, each rating moved by
a personal bias and noise. So the demo keeps real co-watching structure: people who watched
Death Note also watched Code Geass, K-On! fans also watch Lucky Star. Rows carry
``watching_status`` and ``watched_episodes`` as in the real animelist.csv, including
plan-to-watch rows and unrated (0) rows, so the preprocessing filters have real work to do.
Only anime with at least ``min_members`` MAL members are used.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.config import DemoConfig
from animerec.data.layouts import WatchStatus
from animerec.errors import ConfigError

logger = logging.getLogger(__name__)

CATALOGUE_RESOURCE = "anime_2020.csv.gz"
PROFILES_RESOURCE = "real_profiles.csv.gz"
STATUS_WATCHING, STATUS_COMPLETED, STATUS_ON_HOLD = WatchStatus.WATCHING, WatchStatus.COMPLETED, WatchStatus.ON_HOLD
STATUS_DROPPED, STATUS_PLAN_TO_WATCH = WatchStatus.DROPPED, WatchStatus.PLAN_TO_WATCH


def catalogue_path() -> Path:
    """Path of the bundled 2020 catalogue (17,562 anime, Kaggle 2020 layout, gzip)."""
    return Path(str(resources.files("animerec.data") / "resources" / CATALOGUE_RESOURCE))


def profiles_path() -> Path:
    """Path of the real profiles the demo users are resampled from (user_id, anime_id, rating; 291 users)."""
    return Path(str(resources.files("animerec.data") / "resources" / PROFILES_RESOURCE))


def make_ratings(anime: pd.DataFrame, spec: DemoConfig) -> pd.DataFrame:
    """Synthetic ratings in the animelist.csv layout for a canonical catalogue (see layouts.load_anime).

    Returns columns ``user_id, anime_id, rating, watching_status, watched_episodes``.
    """
    rng = np.random.default_rng(spec.seed)
    pool = anime[(anime["members"] >= spec.min_members) & anime["type"].notna()].reset_index(drop=True)
    if len(pool) < spec.max_ratings_per_user:
        raise ConfigError(
            f"Only {len(pool)} anime have at least data.demo.min_members={spec.min_members} members; "
            f"lower it or data.demo.max_ratings_per_user ({spec.max_ratings_per_user})."
        )
    lists, scores, closest = _real_profiles(pool, spec)
    popularity = pool["members"].to_numpy(dtype=float)
    popularity = popularity / popularity.sum()
    episodes = pool["episodes"].fillna(12).clip(lower=1).to_numpy(dtype=float)
    counts = np.exp(rng.uniform(np.log(spec.min_ratings_per_user), np.log(spec.max_ratings_per_user + 1), spec.num_users))
    counts = np.clip(counts.astype(int), spec.min_ratings_per_user, spec.max_ratings_per_user)
    user_ids = np.sort(rng.choice(np.arange(spec.num_users * 5), size=spec.num_users, replace=False))
    parts = []
    for user in range(spec.num_users):
        items, base = _resampled_list(rng, lists, scores, closest, int(counts[user]), popularity)
        rating, status, watched = _watching(rng, base, episodes[items])
        parts.append(pd.DataFrame({"user_id": user_ids[user], "anime_id": pool["anime_id"].to_numpy()[items],
                                   "rating": rating, "watching_status": status,
                                   "watched_episodes": watched.astype(np.int64)}))
    ratings = pd.concat(parts, ignore_index=True)
    logger.info(
        "Demo ratings: %d rows, %d users, %d anime (seed %d), resampled from %d real profiles",
        len(ratings), spec.num_users, ratings["anime_id"].nunique(), spec.seed, len(lists),
    )
    return ratings


def _real_profiles(pool: pd.DataFrame, spec: DemoConfig) -> tuple[list, list, np.ndarray]:
    """The real users' lists (positions in ``pool``), their ratings, and each one's closest other real user (most
    anime in common, relative to list sizes)."""
    position = pd.Series(np.arange(len(pool)), index=pool["anime_id"].to_numpy())
    real = pd.read_csv(profiles_path())
    real = real[real["anime_id"].isin(position.index) & (real["rating"] > 0)]
    real_users = [group for _, group in real.groupby("user_id") if len(group) >= 5]
    if not real_users:
        raise ConfigError(f"No real profile has 5 anime with at least data.demo.min_members={spec.min_members} "
                          f"members; lower it.")
    lists = [position[g["anime_id"].to_numpy()].to_numpy() for g in real_users]
    scores = [g["rating"].to_numpy(dtype=float) for g in real_users]
    member = np.zeros((len(lists), len(pool)), np.float32)
    for row, items in enumerate(lists):
        member[row, items] = 1.0
    overlap = member @ member.T
    overlap /= np.sqrt(np.outer(member.sum(1), member.sum(1)))
    np.fill_diagonal(overlap, -1.0)
    return lists, scores, overlap.argmax(axis=1)


def _resampled_list(rng, lists, scores, closest, n: int, popularity) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic user's anime (pool positions) and base ratings: most of a real user's list, a little of the
    closest real user's, cut or padded to ``n`` (the neighbour's other anime, then popular ones)."""
    template = int(rng.integers(len(lists)))
    other = int(closest[template])
    keep = rng.random(len(lists[template])) < rng.uniform(0.5, 0.9)
    borrow = rng.random(len(lists[other])) < rng.uniform(0.05, 0.25)
    items = np.concatenate([lists[template][keep], lists[other][borrow]])
    base = np.concatenate([scores[template][keep], scores[other][borrow]])
    items, first = np.unique(items, return_index=True)
    base = base[first]
    if len(items) > n:
        pick = rng.choice(len(items), size=n, replace=False)
        return items[pick], base[pick]
    if len(items) < n:
        extra = np.setdiff1d(lists[other], items)
        if len(extra) < n - len(items):
            popular = rng.choice(len(popularity), size=4 * n, replace=False, p=popularity)
            extra = np.concatenate([extra, np.setdiff1d(popular, np.concatenate([items, extra]))])
        extra = extra[: n - len(items)]
        items = np.concatenate([items, extra])
        base = np.concatenate([base, np.full(len(extra), np.median(scores[template]))])
    return items, base


def _watching(rng, base: np.ndarray, episodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratings, watching statuses and watched episodes for a list with ``base`` ratings: dropped anime rated
    lower, planned ones and some being watched unrated."""
    n = len(base)
    raw = base + rng.normal(0.0, 0.5) + rng.normal(0.0, 0.8, size=n)
    rating = np.clip(np.rint(raw), 1, 10).astype(np.int64)
    status = rng.choice([STATUS_COMPLETED, STATUS_WATCHING, STATUS_ON_HOLD, STATUS_DROPPED, STATUS_PLAN_TO_WATCH],
                        size=n, p=[0.8, 0.07, 0.04, 0.04, 0.05])
    watched = episodes.copy()
    partial = np.isin(status, [STATUS_WATCHING, STATUS_ON_HOLD, STATUS_DROPPED])
    watched[partial] = np.floor(watched[partial] * rng.uniform(0.05, 0.95, size=partial.sum()))
    dropped = status == STATUS_DROPPED
    rating[dropped] = np.clip(rating[dropped] - 3, 1, 10)
    plan = status == STATUS_PLAN_TO_WATCH
    watched[plan] = 0
    rating[plan] = 0
    unrated = (status == STATUS_WATCHING) & (rng.random(n) < 0.3)
    rating[unrated] = 0
    return rating, status, watched
