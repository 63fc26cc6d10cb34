"""The MyAnimeList file layouts we read, and loading them into one canonical shape.

Catalogues (anime tables) come in three Kaggle layouts: 2016 (``anime_id, name, genre, type,
episodes, rating, members``), 2020 (``MAL_ID, Name, Score, Genres, Type, Episodes, Members``
and optionally ``English name``, ``Source`` …) and 2023 (``anime_id, Name, English name, Score,
Genres, Type, Episodes, Source, Members`` …). All are mapped to :data:`ANIME_COLUMNS`.

Ratings come as ``user_id, anime_id, rating`` (2016 rating.csv with -1 = not rated, 2020
rating_complete.csv, 2023 users-score), optionally with ``watching_status`` and
``watched_episodes`` (2020 animelist.csv, 0 = not rated). They are streamed in batches so that
the full 109M-row animelist.csv fits in memory as compact numpy arrays.
"""

from __future__ import annotations

import csv
import enum
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from animerec.errors import UserError

logger = logging.getLogger(__name__)

# canonical name -> accepted source column names, in order of preference
ANIME_SOURCES: dict[str, tuple[str, ...]] = {
    "anime_id": ("MAL_ID", "anime_id"),
    "name": ("Name", "name"),
    "english_name": ("English name", "english_name"),
    "japanese_name": ("Japanese name", "Other name", "japanese_name"),
    "genres": ("Genres", "genre", "genres"),
    "type": ("Type", "type"),
    "episodes": ("Episodes", "episodes"),
    "score": ("Score", "rating", "score"),
    "members": ("Members", "members"),
    "source": ("Source", "source"),
    "studios": ("Studios", "studios"),
    "synopsis": ("Synopsis", "sypnopsis", "synopsis"),
    # MAL's age rating ("R - 17+ (violence & profanity)", "Rx - Hentai"); the 2016 layout's "rating" is its score
    "age_rating": ("Rating",),
    "image_url": ("Image URL", "image_url"),  # the 2023 layout's cover (animerec web shows it)
}
ANIME_REQUIRED = ("anime_id", "name", "genres", "type", "episodes", "score", "members")
ANIME_COLUMNS = tuple(ANIME_SOURCES)
MISSING_MARKERS = ("Unknown", "UNKNOWN", "unknown", "")

class WatchStatus(enum.IntEnum):
    """MyAnimeList's watching statuses: animelist.csv's numeric codes, and the words of MAL's XML export."""

    WATCHING = 1
    COMPLETED = 2
    ON_HOLD = 3
    DROPPED = 4
    PLAN_TO_WATCH = 6

    @property
    def label(self) -> str:
        """The word MAL's export writes: "Watching", "Completed", "On-Hold", "Dropped", "Plan to Watch"."""
        return {"ON_HOLD": "On-Hold", "PLAN_TO_WATCH": "Plan to Watch"}.get(self.name, self.name.capitalize())


RATING_SOURCES: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id", "User ID", "userId"),
    "anime_id": ("anime_id", "MAL_ID", "Anime ID", "animeId"),
    "rating": ("rating", "score", "Rating"),
    "watching_status": ("watching_status",),
    "watched_episodes": ("watched_episodes",),
}
RATING_REQUIRED = ("user_id", "anime_id", "rating")


class DataError(UserError, ValueError):
    """Input data that cannot be used as it is; the message says which file and column, and why."""


def _pick_columns(found: list[str], sources: dict[str, tuple[str, ...]], required, path: Path, what: str):
    mapping = {}
    for canonical, candidates in sources.items():
        for name in candidates:
            if name in found:
                mapping[canonical] = name
                break
    missing = [c for c in required if c not in mapping]
    if missing:
        wanted = "; ".join(f"{c} (as {' or '.join(sources[c])})" for c in missing)
        raise DataError(
            f"{path}: the {what} file lacks required column(s) {wanted}. Columns found: "
            f"{', '.join(found) or 'none'}. Supported layouts are the Kaggle MyAnimeList 2016, 2020 and 2023 files."
        )
    return mapping


def open_text(path: Path):
    """pyarrow input stream that decompresses .gz/.bz2/.zst by extension."""

    return pa.input_stream(str(path), compression="detect")


def _header(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    with open_text(path) as stream:
        first = stream.read(1 << 16).decode("utf-8-sig", errors="replace").splitlines()
    if not first or not first[0].strip():
        raise DataError(f"{path}: the file is empty; expected a CSV with a header row.")

    return next(csv.reader([first[0]]))


def load_anime(path: str | Path) -> pd.DataFrame:
    """Read a catalogue in any supported layout into the canonical columns.

    Returns one row per anime with ``anime_id`` (int), ``name``, ``english_name``, ``genres``
    (comma-separated, "" when unknown), ``type``, ``episodes`` (float, NaN when unknown),
    ``score`` (float), ``members`` (int) and ``source``; "Unknown" markers become missing values
    and HTML entities in titles are decoded.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"Anime file {path} does not exist.")
    found = _header(path)
    mapping = _pick_columns(found, ANIME_SOURCES, ANIME_REQUIRED, path, "anime")
    if path.suffix == ".parquet":
        raw = pd.read_parquet(path, columns=list(mapping.values())).astype(str)
    else:
        raw = pd.read_csv(path, usecols=list(mapping.values()), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame = pd.DataFrame({canonical: raw[source] for canonical, source in mapping.items()})
    for column in ANIME_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[list(ANIME_COLUMNS)]
    if frame.empty:
        raise DataError(f"{path}: the anime file has a header but no rows.")

    ids = pd.to_numeric(frame["anime_id"], errors="coerce")
    if ids.isna().any():
        bad = frame.loc[ids.isna(), "anime_id"].head(3).tolist()
        raise DataError(f"{path}: column {mapping['anime_id']} holds non-numeric anime IDs, e.g. {bad}.")
    out = pd.DataFrame({"anime_id": ids.astype("int64")})
    for column in ("name", "english_name", "japanese_name", "genres", "type", "source", "studios", "synopsis",
                   "age_rating", "image_url"):
        text = frame[column].astype("string").str.strip()
        text = text.mask(text.isin(MISSING_MARKERS))
        out[column] = text
    out["name"] = out["name"].map(lambda s: html.unescape(s) if isinstance(s, str) else s).astype("string")
    for column in ("english_name", "japanese_name"):
        out[column] = out[column].map(lambda s: html.unescape(s) if isinstance(s, str) else s).astype("string")
    out["genres"] = out["genres"].fillna("").map(
        lambda s: ", ".join(g.strip() for g in s.split(",") if g.strip() and g.strip() not in MISSING_MARKERS)
    )
    for column in ("episodes", "score", "members"):
        out[column] = pd.to_numeric(frame[column].replace(list(MISSING_MARKERS), np.nan), errors="coerce")
    out["members"] = out["members"].fillna(0).astype("int64")
    duplicated = out["anime_id"].duplicated(keep="last")
    if duplicated.any():
        logger.warning("%s: %d duplicate anime IDs; keeping the last row of each.", path, int(duplicated.sum()))
        out = out[~duplicated]
    return out.reset_index(drop=True)


@dataclass
class RatingBatch:
    """Columns of one streamed batch of ratings (missing optional columns are None)."""

    user_id: np.ndarray
    anime_id: np.ndarray
    rating: np.ndarray
    watching_status: np.ndarray | None
    watched_episodes: np.ndarray | None


def ratings_columns(path: str | Path) -> dict[str, str]:
    """Map canonical rating columns to the file's own names (a clear error if one is missing)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Ratings file {path} does not exist.")
    return _pick_columns(_header(path), RATING_SOURCES, RATING_REQUIRED, path, "ratings")


def iter_ratings(path: str | Path, chunk_rows: int = 2_000_000) -> Iterator[RatingBatch]:
    """Stream a ratings file (CSV, CSV.gz or Parquet) in batches of about ``chunk_rows`` rows."""

    path = Path(path)
    mapping = ratings_columns(path)
    header = _header(path)
    source_names = list(mapping.values())
    try:
        if path.suffix == ".parquet":
            batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=source_names)
        else:
            # Ask for numbers; a value that does not parse becomes a DataError naming the column below.
            types = {name: pa.float64() for name in source_names}
            types[mapping["user_id"]] = pa.int64()
            types[mapping["anime_id"]] = pa.int64()
            batches = pcsv.open_csv(
                open_text(path),
                read_options=pcsv.ReadOptions(block_size=max(1 << 20, chunk_rows * 24)),
                convert_options=pcsv.ConvertOptions(include_columns=source_names, column_types=types),
            )
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cols = {}
            for canonical, name in mapping.items():
                array = batch.column(batch.schema.get_field_index(name))
                if array.null_count:
                    raise DataError(f"{path}: column {name} has {array.null_count} empty value(s); every row needs one.")
                cols[canonical] = array.to_numpy(zero_copy_only=False)
            yield RatingBatch(
                user_id=_as_number(cols["user_id"], path, mapping["user_id"], np.int64),
                anime_id=_as_number(cols["anime_id"], path, mapping["anime_id"], np.int64),
                rating=_as_number(cols["rating"], path, mapping["rating"], np.float32),
                watching_status=cols.get("watching_status"),
                watched_episodes=cols.get("watched_episodes"),
            )
    except pa.ArrowInvalid as err:
        message = str(err)
        number = re.search(r"column #(\d+)", message)
        column = header[int(number.group(1))] if number and int(number.group(1)) < len(header) else None
        where = f"column {column}" if column else "a column"
        raise DataError(
            f"{path}: {where} holds a value that is not a number ({message.splitlines()[0]}). "
            f"Ratings files need numeric user_id, anime_id and rating columns."
        ) from None


def _as_number(values: np.ndarray, path: Path, column: str, dtype: type) -> np.ndarray:
    """A column as ``dtype`` (int64 IDs or float32 ratings): text that holds numbers is converted (a Parquet
    file's string column), anything else is a DataError naming the file, the column and a few values."""
    what = "integer IDs" if dtype is np.int64 else "numbers"
    if values.dtype.kind not in ("iu" if dtype is np.int64 else "iuf"):
        numeric = pd.to_numeric(pd.Series(values), errors="coerce")
        if numeric.isna().any():
            bad = pd.Series(values)[numeric.isna()].head(3).tolist()
            raise DataError(f"{path}: column {column} holds values that are not {what}, e.g. {bad}.")
        values = numeric.to_numpy()
    values = values.astype(dtype, copy=False)
    if dtype is not np.int64 and np.isnan(values).any():
        raise DataError(f"{path}: column {column} holds NaN ratings; every rating must be a number.")
    return values


def find_data_file(folder: Path, preferred: tuple[str, ...] = ()) -> Path:
    """The one data file (.csv, .csv.gz, .parquet) in an artifact folder, or the preferred name."""
    candidates = sorted(
        p for p in Path(folder).rglob("*")
        if p.is_file() and (p.name.endswith((".csv", ".csv.gz", ".parquet")))
    )
    for name in preferred:
        for p in candidates:
            if p.name == name:
                return p
    if len(candidates) != 1:
        raise DataError(
            f"Expected one data file (.csv, .csv.gz or .parquet) in {folder}, found "
            f"{len(candidates)}: {', '.join(p.name for p in candidates) or 'none'}."
        )
    return candidates[0]
