"""A person's anime list, for recommending to someone who was not in the training data.

Three ways in, one result (:class:`AnimeList`):

- :func:`read_list` reads a file: a CSV with columns ``anime_id,rating`` (1-10; 0 or empty
  means listed but not rated) or a MyAnimeList XML export (``.xml`` or ``.xml.gz``, exactly as
  MAL writes it: ``<myanimelist><myinfo>...</myinfo><anime>...</anime>...``);
- :func:`from_records` takes ``[{"anime_id": ..., "rating": ...}]`` (the pyfunc's ``ratings``);
- :func:`from_titles` takes liked titles (``--likes``), each counted as a rating of
  :data:`LIKE_RATING`.

Files are untrusted: XML is parsed with defusedxml (no DTDs, entity expansion or external
entities), every file is read up to :data:`MAX_BYTES` (after gunzip) and :data:`MAX_ENTRIES`
entries, and anything malformed, truncated or of the wrong kind is a :class:`ListError` naming
the file and what is wrong.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
from collections.abc import Iterable, Mapping, Sequence  # the ABCs: isinstance is 5x faster than typing's aliases
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from animerec.data.layouts import WatchStatus
from animerec.errors import UserError

logger = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024 * 1024  # a MAL export of 20,000 anime is about 15 MB
MAX_ENTRIES = 100_000
LIKE_RATING = 9.0  # what a liked title counts as: above the relevance threshold (8), below a perfect 10
LIKES = "the liked titles"  # the source of a list of liked titles (its reasons say "you like", not "you rated")
PLAN_TO_WATCH = WatchStatus.PLAN_TO_WATCH.label
# MAL writes statuses as words; some older exports and tools write their numeric codes.
STATUS_CODES = {str(status.value): status.label for status in WatchStatus}
STATUSES = tuple(status.label for status in WatchStatus)


class ListError(UserError, ValueError):
    """A list that cannot be read; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class AnimeList:
    """One person's list.

    ``anime_ids`` ``[m]`` are MAL IDs (unique), ``ratings`` ``[m]`` their 1-10 ratings (NaN when
    listed without one) and ``planned`` ``[m]`` marks plan-to-watch entries: never recommended
    back, never read as a taste signal; ``dropped`` ``[m]`` marks dropped ones (read as dislikes
    unless asked otherwise, see :func:`animerec.foldin.fold_in`).
    """

    anime_ids: np.ndarray
    ratings: np.ndarray
    planned: np.ndarray
    source: str
    dropped: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.anime_ids)

    @classmethod
    def build(cls, anime_ids: Sequence[int], ratings: Sequence[float], planned: Sequence[bool] | None,
              source: str, dropped: Sequence[bool] | None = None) -> "AnimeList":
        """From parallel sequences; a repeated anime keeps its last entry (as preprocessing does)."""
        ids = np.asarray(anime_ids, dtype=np.int64)
        values = np.asarray(ratings, dtype=np.float32)
        plan = np.zeros(len(ids), bool) if planned is None else np.asarray(planned, dtype=bool)
        gone = np.zeros(len(ids), bool) if dropped is None else np.asarray(dropped, dtype=bool)
        if len(ids) == 0:
            raise ListError(f"{source} lists no anime: nothing to recommend from.")
        if len(ids) > MAX_ENTRIES:
            raise ListError(f"{source} lists {len(ids):,} anime; the limit is {MAX_ENTRIES:,}.")
        _, last = np.unique(ids[::-1], return_index=True)
        keep = np.sort(len(ids) - 1 - last)
        return cls(ids[keep], values[keep], plan[keep], source, gone[keep])


def _rating(value: Any, where: str) -> float:
    """A 1-10 rating, NaN for 0 / empty (listed, not rated); a ListError otherwise."""
    if type(value) in (int, float) and 1 <= value <= 10:  # the common case, first
        return float(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ListError(f"{where}: rating {value!r} is not a number; use 1-10, or 0 / empty for not rated.") from None
    if number == 0:
        return math.nan
    if not 1 <= number <= 10 or math.isnan(number):
        raise ListError(f"{where}: rating {value!r} is outside 1-10 (0 or empty means listed but not rated).")
    return number


def _anime_id(value: Any, where: str) -> int:
    if type(value) is int and value >= 1:  # the common case, first
        return value
    try:
        number = float(str(value).strip())
        if number != int(number) or number < 1:
            raise ValueError
        return int(number)
    except (TypeError, ValueError, OverflowError):
        raise ListError(f"{where}: anime_id {value!r} is not a MAL ID (a positive integer).") from None


def from_records(records: Iterable[Mapping[str, Any]], source: str = "the ratings list") -> AnimeList:
    """From ``[{"anime_id": 1, "rating": 9}, ...]`` (rating optional: 0 / missing = not rated; ``"planned": true``
    marks a plan-to-watch entry)."""
    if isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise ListError(f"{source} must be a list of {{anime_id, rating}} objects, got {type(records).__name__}.")
    ids, ratings, planned, dropped = [], [], [], []
    for number, record in enumerate(records):
        where = f"{source}, entry {number}"
        if not isinstance(record, Mapping) or "anime_id" not in record:
            raise ListError(f"{where}: expected an object with anime_id and rating, got {record!r}.")
        ids.append(_anime_id(record["anime_id"], where))
        ratings.append(_rating(record.get("rating"), where))
        planned.append(record.get("planned") is True)
        dropped.append(record.get("dropped") is True)
        if number >= MAX_ENTRIES:
            raise ListError(f"{source} lists more than {MAX_ENTRIES:,} anime; that is the limit.")
    return AnimeList.build(ids, ratings, planned, source, dropped)


def from_titles(titles: Sequence[str], find) -> AnimeList:
    """Liked titles, each resolved with ``find(title) -> MAL ID`` and counted as :data:`LIKE_RATING`."""
    if not titles:
        raise ListError("--likes needs at least one title.")
    ids = [find(str(title)) for title in titles]
    return AnimeList.build(ids, [LIKE_RATING] * len(ids), None, LIKES)


def read_list(path: str | Path) -> AnimeList:
    """A ratings CSV or a MAL XML export (optionally gzipped), told apart by content, not by name."""
    path = Path(path)
    data = _read_bytes(path)
    head = data.lstrip()[:200]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head.startswith(b"<"):
        return read_mal_xml(data, str(path))
    return read_csv(data, str(path))


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ListError(f"List file {path} does not exist (or is not a file).")
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if magic == b"\x1f\x8b" else raw
            data = stream.read(MAX_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ListError(f"List file {path} cannot be read: {err}. Is it a complete .gz file?") from None
    if len(data) > MAX_BYTES:
        raise ListError(f"List file {path} is larger than {MAX_BYTES / 2**20:g} MB (unpacked); that is the limit.")
    if not data.strip():
        raise ListError(f"List file {path} is empty.")
    return data


def read_csv(data: bytes, source: str) -> AnimeList:
    """``anime_id,rating`` rows (other columns are ignored; a header is required)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ListError(f"{source} is neither a UTF-8 CSV nor a MAL XML export ({err.reason} at byte "
                        f"{err.start}).") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = [name.strip().lower() for name in (reader.fieldnames or [])]
    if "anime_id" not in fields:
        raise ListError(f"{source} has no anime_id column (its header: {', '.join(reader.fieldnames or []) or 'none'}). "
                        f"Write a CSV with columns anime_id,rating, or pass a MyAnimeList XML export.")
    reader.fieldnames = fields
    ids, ratings = [], []
    try:
        for row in reader:
            where = f"{source}, line {reader.line_num}"
            if row.get("anime_id") is None or not str(row["anime_id"]).strip():
                if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    continue  # a blank line
                raise ListError(f"{where}: anime_id is empty.")
            ids.append(_anime_id(row["anime_id"], where))
            ratings.append(_rating(row.get("rating"), where))
            if len(ids) > MAX_ENTRIES:
                raise ListError(f"{source} lists more than {MAX_ENTRIES:,} anime; that is the limit.")
    except csv.Error as err:
        raise ListError(f"{source}, line {reader.reader.line_num}: malformed CSV ({err}).") from None
    return AnimeList.build(ids, ratings, None, source)


def read_mal_xml(data: bytes, source: str) -> AnimeList:
    """A MyAnimeList anime-list export: ``<anime>`` entries with ``series_animedb_id``, ``my_score``, ``my_status``."""

    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise ListError(f"{source} is refused: it declares a DTD or entities ({type(err).__name__}); a MAL export "
                        f"has none.") from None
    except ParseError as err:
        raise ListError(f"{source} is not well-formed XML ({err}): is it truncated? Export the list from "
                        f"MyAnimeList again.") from None
    if root.tag != "myanimelist":
        raise ListError(f"{source} is XML but not a MyAnimeList export: its root element is <{root.tag}>, "
                        f"expected <myanimelist>.")
    entries = root.findall("anime")
    if not entries and root.findall("manga"):
        raise ListError(f"{source} is a MyAnimeList manga list; export your anime list instead.")
    if len(entries) > MAX_ENTRIES:
        raise ListError(f"{source} lists {len(entries):,} anime; the limit is {MAX_ENTRIES:,}.")
    ids, ratings, planned, dropped = [], [], [], []
    for number, entry in enumerate(entries, start=1):
        where = f"{source}, <anime> entry {number}"
        anime_id = entry.findtext("series_animedb_id")
        if anime_id is None:
            raise ListError(f"{where} has no <series_animedb_id>.")
        status = (entry.findtext("my_status") or "").strip()
        status = STATUS_CODES.get(status, status)
        if status and status not in STATUSES:
            raise ListError(f"{where}: unknown <my_status> {status!r}; MAL uses {', '.join(STATUSES)}.")
        ids.append(_anime_id(anime_id, where))
        ratings.append(_rating(entry.findtext("my_score"), where))
        planned.append(status == PLAN_TO_WATCH)
        dropped.append(status == WatchStatus.DROPPED.label)
    if not ids:
        raise ListError(f"{source} is a MyAnimeList export with no <anime> entries: nothing to recommend from.")
    return AnimeList.build(ids, ratings, planned, source, dropped)
