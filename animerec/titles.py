"""Finding an anime by what people type.

:class:`TitleIndex` matches a query against every name the catalogue has for an anime: MAL's
``name``, the ``english_name`` and the ``japanese_name`` (Kaggle 2020's "Japanese name", 2023's
"Other name") wherever the catalogue has those columns. Matching ignores case, accents, spacing
and punctuation ("steins gate" is Steins;Gate). An exact match wins (among several, the anime with
the most MAL members). Otherwise the closest fuzzy match is taken only when it clearly beats the
runner-up and keeps the query's numbers ("Naruto 2" is not Naruto); else the query fails with
suggestions ordered by closeness, then by popularity. A title that is a number ("86") is a title:
MAL IDs go through ``recs.anime_id`` / ``--id``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from animerec.errors import RecommenderError

logger = logging.getLogger(__name__)

NAME_COLUMNS = ("name", "english_name", "japanese_name")
MIN_SCORE = 88.0  # fuzzy closeness (0-100) a guess needs
MIN_MARGIN = 4.0  # and by how much it must beat the best other anime


class TitleError(RecommenderError):
    """A title that matches no anime clearly; the message lists the closest ones."""


def normalise(text: str) -> str:
    """Case, accent, spacing and punctuation-free key: "Steins;Gate" and "steins gate" -> "steinsgate"."""
    folded = unicodedata.normalize("NFKD", str(text)).casefold()
    return "".join(ch for ch in folded if ch.isalnum() and not unicodedata.combining(ch))


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+", str(text)))


@dataclass
class Match:
    anime_id: int
    name: str
    score: float


class TitleIndex:
    """Every name of every anime that can be recommended, normalised once."""

    def __init__(self, anime: pd.DataFrame) -> None:
        frame = anime
        if "anime_index" in frame:
            frame = frame[frame["anime_index"] >= 0]
        columns = [c for c in NAME_COLUMNS if c in frame]
        names = frame[columns].astype("string").fillna("")
        ids, display, keys, members = [], [], [], []
        member_counts = frame["members"].fillna(0).to_numpy() if "members" in frame else np.zeros(len(frame))
        for column in columns:
            for anime_id, name, count in zip(frame["anime_id"].to_numpy(), names[column].to_numpy(), member_counts):
                key = normalise(name)
                if key:
                    ids.append(int(anime_id))
                    display.append(str(name))
                    keys.append(key)
                    members.append(float(count))
        self.ids, self.display, self.keys = np.array(ids, np.int64), display, keys
        self.members = np.array(members)
        self.by_key: dict[str, int] = {}
        for position in np.argsort(-self.members, kind="stable"):  # the most popular anime owns a shared name
            self.by_key.setdefault(keys[position], int(position))

    def candidates(self, query: str, limit: int = 10) -> list[Match]:
        """The closest anime (one entry each), closest first, then the most popular."""

        key = normalise(query)
        if not key:
            return []
        scored = process.extract(key, self.keys, scorer=fuzz.ratio, limit=limit * 6)
        best: dict[int, tuple[float, float, str]] = {}
        for _key, score, position in scored:
            anime_id = int(self.ids[position])
            entry = (round(float(score), 1), float(self.members[position]), self.display[position])
            if anime_id not in best or entry[:2] > best[anime_id][:2]:
                best[anime_id] = entry
        ordered = sorted(best.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
        return [Match(anime_id, name, score) for anime_id, (score, _members, name) in ordered[:limit]]

    def find(self, query: str) -> int:
        """The MAL ID of the anime ``query`` names; a :class:`TitleError` with suggestions otherwise."""
        text = str(query).strip()
        position = self.by_key.get(normalise(text))
        if position is not None:
            return int(self.ids[position])
        matches = self.candidates(text)
        if matches:
            top = matches[0]
            runner_up = matches[1].score if len(matches) > 1 else 0.0
            if top.score >= MIN_SCORE and top.score - runner_up >= MIN_MARGIN and _numbers(text) <= _numbers(top.name):
                logger.info("No exact title %r; using the clearly closest one, %r (%.0f vs %.0f)", text, top.name,
                            top.score, runner_up)
                return top.anime_id
        suggestions = "; ".join(f"{m.name} (MAL {m.anime_id})" for m in matches[:5]) or "nothing close"
        hint = (f" To ask by MAL ID, use recs.anime_id={text} (CLI: --id {text})." if text.isdigit() else
                " Titles match MAL's name, English name or Japanese name; you can also query by MAL ID "
                "(recs.anime_id, CLI --id).")
        raise TitleError(f"No anime titled {text!r} stands out. Closest: {suggestions}.{hint}")
