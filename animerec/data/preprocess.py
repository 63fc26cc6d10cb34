"""Cleaning, filtering, scaling, encoding and splitting ratings.

The ratings file is streamed in batches and kept as compact numpy arrays (int64 user IDs,
int32 anime IDs, float32 ratings), so the full 109M-row animelist.csv fits in a few GiB.
Output files (written into a folder, usually an artifact's staging folder):

- ``train.parquet``, ``valid.parquet``, ``test.parquet``: ``user_id``, ``anime_id`` (original
  IDs), ``user_index``, ``anime_index`` (contiguous), ``rating`` (1-10) and ``rating_scaled``;
- ``anime.parquet``: the canonical catalogue with ``anime_index`` (-1 for anime nobody rated);
- ``encoders.npz``: ``user_ids[user_index]`` and ``anime_ids[anime_index]``;
- ``scale.json``: the min-max rating scale; ``stats.json`` and ``rating_hist.png``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from animerec.artifacts import write_arrays
from animerec.config import DataConfig
from animerec.data.layouts import DataError, WatchStatus, iter_ratings, load_anime
from animerec.plots import figure

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class Ratings:
    user_id: np.ndarray
    anime_id: np.ndarray
    rating: np.ndarray

    def __len__(self) -> int:
        return len(self.rating)

    def take(self, mask_or_index) -> "Ratings":
        return Ratings(self.user_id[mask_or_index], self.anime_id[mask_or_index], self.rating[mask_or_index])


def read_filtered(ratings_path: Path, anime: pd.DataFrame, options: DataConfig) -> tuple[Ratings, dict]:
    """Stream the ratings file, applying the row filters; returns the kept rows and row counts."""
    max_id = int(anime["anime_id"].max())
    known = np.zeros(max_id + 1, dtype=bool)
    known[anime["anime_id"].to_numpy()] = True
    episodes = np.full(max_id + 1, np.nan, dtype=np.float32)
    episodes[anime["anime_id"].to_numpy()] = anime["episodes"].to_numpy(dtype=np.float32)
    counts = {"rows_read": 0, "not_rated": 0, "plan_to_watch": 0, "unwatched": 0, "half_watched": 0, "unknown_anime": 0}
    unknown_examples: set[int] = set()
    users, animes, ratings = [], [], []
    for batch in iter_ratings(ratings_path, options.chunk_rows):
        keep = _kept_rows(batch, options, known, episodes, counts, unknown_examples)
        bad = keep & ((batch.rating > 10) | (batch.rating != np.round(batch.rating)))
        if bad.any():
            raise DataError(f"{ratings_path}: column rating holds {int(bad.sum())} value(s) outside the MAL scale "
                            f"1-10 (0/-1 = not rated), e.g. {batch.rating[bad][0]:g}.")
        users.append(batch.user_id[keep])
        animes.append(batch.anime_id[keep].astype(np.int32))
        ratings.append(batch.rating[keep])
    if counts["rows_read"] == 0:
        raise DataError(f"{ratings_path}: the ratings file has a header but no rows.")
    if counts["unknown_anime"] and options.unknown_anime == "error":
        raise DataError(
            f"{ratings_path}: {counts['unknown_anime']} rating(s) name anime IDs that are not in the anime file "
            f"(e.g. {sorted(unknown_examples)[:5]}). Use the catalogue that goes with these ratings, or set "
            f"data.unknown_anime=drop to drop those rows."
        )
    if counts["unknown_anime"]:
        logger.warning("Dropped %d ratings of anime not in the catalogue (e.g. %s).",
                       counts["unknown_anime"], sorted(unknown_examples)[:5])
    kept = Ratings(
        np.concatenate(users) if users else np.empty(0, np.int64),
        np.concatenate(animes) if animes else np.empty(0, np.int32),
        np.concatenate(ratings) if ratings else np.empty(0, np.float32),
    )
    return kept, counts


def _kept_rows(batch, options: DataConfig, known: np.ndarray, episodes: np.ndarray, counts: dict,
               unknown_examples: set) -> np.ndarray:
    """``[rows]`` bool: the batch's rows that pass the row filters; ``counts`` gains what each filter dropped."""
    counts["rows_read"] += len(batch.rating)
    keep = batch.rating > 0  # 0 (animelist) and -1 (2016) mean "watched, not rated"
    counts["not_rated"] += int((~keep).sum())
    if batch.watching_status is not None and options.drop_plan_to_watch:
        plan = batch.watching_status == WatchStatus.PLAN_TO_WATCH
        counts["plan_to_watch"] += int((keep & plan).sum())
        keep &= ~plan
    if batch.watched_episodes is not None and options.drop_unwatched:
        unwatched = batch.watched_episodes <= 0
        counts["unwatched"] += int((keep & unwatched).sum())
        keep &= ~unwatched
    in_range = (batch.anime_id >= 0) & (batch.anime_id < len(known))
    is_known = np.zeros(len(batch.anime_id), dtype=bool)
    is_known[in_range] = known[batch.anime_id[in_range]]
    unknown = keep & ~is_known
    if unknown.any():
        counts["unknown_anime"] += int(unknown.sum())
        if len(unknown_examples) < 5:
            unknown_examples.update(np.unique(batch.anime_id[unknown])[:5].tolist())
        keep &= is_known
    if batch.watched_episodes is not None and options.drop_half_watched:
        total = np.full(len(keep), np.nan, dtype=np.float32)
        total[is_known] = episodes[batch.anime_id[is_known]]
        half = keep & ~np.isnan(total) & (batch.watched_episodes < total / 2)
        counts["half_watched"] += int(half.sum())
        keep &= ~half
    return keep


def deduplicate(r: Ratings) -> tuple[Ratings, int]:
    """Keep the last rating of each (user, anime) pair, in file order."""
    if len(r) == 0:
        return r, 0
    key = (r.user_id.astype(np.int64) << 24) | r.anime_id.astype(np.int64)
    _, first_in_reversed = np.unique(key[::-1], return_index=True)
    last = np.sort(len(key) - 1 - first_in_reversed)
    return r.take(last), len(r) - len(last)


def apply_min_counts(r: Ratings, options: DataConfig, source: str = "the ratings") -> tuple[Ratings, dict]:
    """Drop users with fewer than min_user_ratings ratings, then anime with fewer than min_anime_ratings.

    ``source`` (the ratings file) is named in the error when nothing is left."""
    before_users = len(np.unique(r.user_id))
    users, inverse, per_user = np.unique(r.user_id, return_inverse=True, return_counts=True)
    r = r.take(per_user[inverse] >= options.min_user_ratings)
    if len(r) == 0:
        raise DataError(
            f"{source}: all {before_users} users were filtered out: none has at least data.min_user_ratings="
            f"{options.min_user_ratings} ratings left after the row filters (most ratings: "
            f"{int(per_user.max()) if len(per_user) else 0}). Lower data.min_user_ratings."
        )
    _, inverse, per_anime = np.unique(r.anime_id, return_inverse=True, return_counts=True)
    r = r.take(per_anime[inverse] >= options.min_anime_ratings)
    if len(r) == 0:
        raise DataError(
            f"{source}: all {len(per_anime)} anime were filtered out: none has at least data.min_anime_ratings="
            f"{options.min_anime_ratings} ratings from the users kept (most ratings: {int(per_anime.max())}). "
            f"Lower data.min_anime_ratings."
        )
    return r, {"users_before_min_count": before_users}


def split_per_user(user_index: np.ndarray, options: DataConfig) -> np.ndarray:
    """0 = train, 1 = valid, 2 = test; a seeded shuffle within each user, at least one train row each."""
    rng = np.random.default_rng(options.split_seed)
    n = len(user_index)
    order = np.lexsort((rng.random(n), user_index))
    sorted_users = user_index[order]
    counts = np.bincount(user_index)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - starts[sorted_users]
    n_test = np.floor(counts * options.test_fraction).astype(np.int64)
    n_valid = np.floor(counts * options.valid_fraction).astype(np.int64)
    split_sorted = np.zeros(n, dtype=np.int8)
    split_sorted[rank < n_test[sorted_users] + n_valid[sorted_users]] = 1
    split_sorted[rank < n_test[sorted_users]] = 2
    split = np.empty(n, dtype=np.int8)
    split[order] = split_sorted
    return split


def preprocess(anime_path: str | Path, ratings_path: str | Path, options: DataConfig, out_dir: str | Path) -> dict:
    """Run the whole preprocessing into ``out_dir``; returns the stats (also written as stats.json)."""
    out_dir = Path(out_dir)
    anime = load_anime(anime_path)
    logger.info("Catalogue: %d anime from %s", len(anime), anime_path)
    kept, counts = read_filtered(Path(ratings_path), anime, options)
    logger.info("Read %d rating rows, kept %d after row filters", counts["rows_read"], len(kept))
    kept, counts["duplicates"] = deduplicate(kept)
    kept, extra = apply_min_counts(kept, options, str(ratings_path))
    counts.update(extra)

    user_ids, user_index = np.unique(kept.user_id, return_inverse=True)
    anime_ids, anime_index = np.unique(kept.anime_id, return_inverse=True)
    lo, hi = float(kept.rating.min()), float(kept.rating.max())
    span = hi - lo if hi > lo else 1.0
    scaled = ((kept.rating - lo) / span).astype(np.float32)
    split = split_per_user(user_index, options)

    for code, name in enumerate(SPLITS):
        mask = split == code
        table = pa.table({
            "user_id": kept.user_id[mask],
            "anime_id": kept.anime_id[mask].astype(np.int64),
            "user_index": user_index[mask].astype(np.int32),
            "anime_index": anime_index[mask].astype(np.int32),
            "rating": kept.rating[mask].astype(np.int8),
            "rating_scaled": scaled[mask],
        })
        pq.write_table(table, out_dir / f"{name}.parquet")

    position = pd.Series(np.arange(len(anime_ids), dtype=np.int64), index=anime_ids)
    anime = anime.assign(anime_index=anime["anime_id"].map(position).fillna(-1).astype(np.int64))
    anime.to_parquet(out_dir / "anime.parquet", index=False)
    write_arrays(out_dir / "encoders.npz", {"user_ids": user_ids, "anime_ids": anime_ids.astype(np.int64)})
    (out_dir / "scale.json").write_text(json.dumps({"min": lo, "max": hi}) + "\n", encoding="utf-8")

    split_sizes = {name: int((split == code).sum()) for code, name in enumerate(SPLITS)}
    histogram = {str(int(v)): int(c) for v, c in zip(*np.unique(kept.rating, return_counts=True))}
    stats = {
        "num_users": int(len(user_ids)),
        "num_anime": int(len(anime_ids)),
        "num_catalogue_anime": int(len(anime)),
        "num_ratings": int(len(kept)),
        "sparsity": float(1.0 - len(kept) / (len(user_ids) * len(anime_ids))),
        "rating_mean": float(kept.rating.mean()),
        "rating_scale": {"min": lo, "max": hi},
        "splits": split_sizes,
        "rows": counts,
        "rating_histogram": histogram,
        "options": options.model_dump(exclude={"demo"}),
    }
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    plot_histogram(histogram, out_dir / "rating_hist.png")
    logger.info(
        "Preprocessed: %d users, %d anime, %d ratings (train %d / valid %d / test %d), sparsity %.4f",
        stats["num_users"], stats["num_anime"], stats["num_ratings"],
        split_sizes["train"], split_sizes["valid"], split_sizes["test"], stats["sparsity"],
    )
    return stats


def plot_histogram(histogram: dict[str, int], path: Path) -> None:
    with figure(path) as (_fig, ax):
        ax.bar([int(k) for k in histogram], list(histogram.values()), color="#2e6fba")
        ax.set_xlabel("rating")
        ax.set_ylabel("ratings")
        ax.set_xticks(range(1, 11))
        ax.set_title("Rating distribution")
