"""Finding an anime by what people type.

:class:`TitleIndex` matches a query against every name the catalogue has for an anime: MAL's
``name``, the ``english_name`` and the ``japanese_name`` (Kaggle 2020's "Japanese name", 2023's
"Other name") wherever the catalogue has those columns. Matching ignores case, accents, spacing
and punctuation ("steins gate" is Steins;Gate). An exact match wins (among several, the anime with
the most MAL members). A part of a title that several anime share word for word ("code geass", "hunter x
hunter") is the most-watched of them, the others named (:meth:`TitleIndex.lookup`). Otherwise the closest
fuzzy match is taken only when it clearly beats the runner-up and keeps the query's numbers ("Naruto 2" is
not Naruto); else, with a ``search`` (AniList's, :class:`animerec.online.TitleSearch`: English titles such as
"attack on titan"), its best answer the model knows; else the query fails with suggestions ordered by
closeness, then by popularity. Adult anime are never suggested, guessed or searched for; typed whole, their
title still finds them. A title that is a number ("86") is a title: MAL IDs go through ``recs.anime_id`` /
``--id``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from animerec.errors import RecommenderError, UserError

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
    others: list[str] = field(default_factory=list)  # other anime the query named as well (a franchise's titles)


def is_adult(frame: pd.DataFrame) -> np.ndarray:
    """``[len(frame)]`` bool: adult anime (MAL hides them by default): the Hentai genre or an "Rx" age rating. The
    one rule for the filters (``recommenders.Catalogue``), the suggestions and the title search."""
    genres = frame["genres"].fillna("").astype(str) if "genres" in frame else pd.Series("", index=frame.index)
    adult = genres.str.contains(r"\bhentai\b", case=False, regex=True).to_numpy(bool, copy=True)
    if "age_rating" in frame:
        adult |= frame["age_rating"].fillna("").astype(str).str.startswith("Rx").to_numpy()
    return adult


class TitleIndex:
    """Every name of every anime that can be recommended, normalised once."""

    def __init__(self, anime: pd.DataFrame, search: Callable[[str], list[tuple[int, bool]]] | None = None) -> None:
        frame = anime
        if "anime_index" in frame:
            frame = frame[frame["anime_index"] >= 0]
        columns = [c for c in NAME_COLUMNS if c in frame]
        names = frame[columns].astype("string").fillna("")
        ids, display, keys, members, adult = [], [], [], [], []
        member_counts = frame["members"].fillna(0).to_numpy() if "members" in frame else np.zeros(len(frame))
        adult_rows = is_adult(frame)
        for column in columns:
            for anime_id, name, count, rx in zip(frame["anime_id"].to_numpy(), names[column].to_numpy(), member_counts,
                                                 adult_rows):
                key = normalise(name)
                if key:
                    ids.append(int(anime_id))
                    display.append(str(name))
                    keys.append(key)
                    members.append(float(count))
                    adult.append(bool(rx))
        self.ids, self.display, self.keys = np.array(ids, np.int64), display, keys
        self.members, self.adult, self.search = np.array(members), np.array(adult, bool), search
        self.words = [f" {' '.join(_words(d))} " for d in display]  # each name's words, spaced for whole-word search
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
            if self.adult[position]:  # never suggested
                continue
            anime_id = int(self.ids[position])
            entry = (round(float(score), 1), float(self.members[position]), self.display[position])
            if anime_id not in best or entry[:2] > best[anime_id][:2]:
                best[anime_id] = entry
        ordered = sorted(best.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))
        return [Match(anime_id, name, score) for anime_id, (score, _members, name) in ordered[:limit]]

    def find(self, query: str) -> int:
        """The MAL ID of the anime ``query`` names; a :class:`TitleError` with suggestions otherwise."""
        return self.lookup(query).anime_id

    def lookup(self, query: str) -> Match:
        """The anime ``query`` names (see the module's docstring), with the others it named too; a
        :class:`TitleError` with suggestions otherwise."""
        text = str(query).strip()
        position = self.by_key.get(normalise(text))
        if position is not None:
            return Match(int(self.ids[position]), self.display[position], 100.0)
        shared = self.sharing(text)
        if shared:
            return shared
        matches = self.candidates(text)
        if matches:
            top = matches[0]
            runner_up = matches[1].score if len(matches) > 1 else 0.0
            if top.score >= MIN_SCORE and top.score - runner_up >= MIN_MARGIN and _numbers(text) <= _numbers(top.name):
                logger.info("No exact title %r; using the clearly closest one, %r (%.0f vs %.0f)", text, top.name,
                            top.score, runner_up)
                return top
        searched, why = self.searched(text)
        if searched:
            return searched
        suggestions = "; ".join(f"{m.name} (MAL {m.anime_id})" for m in matches[:5]) or "nothing close"
        hint = (f" To ask by MAL ID, use recs.anime_id={text} (CLI: --id {text})." if text.isdigit() else
                f" {why} You can also query by MAL ID (recs.anime_id, CLI --id).")
        raise TitleError(f"No anime titled {text!r} in the catalogue stands out. Closest: {suggestions}.{hint}")

    def sharing(self, text: str) -> Match | None:
        """The most-watched anime (not adult) whose name holds every word of ``text`` in a row, the others named."""
        words = _words(text)
        if len(words) < 2 and len("".join(words)) < 6:  # "love" or "one" name no franchise
            return None
        needle = f" {' '.join(words)} "
        hits = [i for i, name in enumerate(self.words) if needle in name and not self.adult[i]]
        if not hits:
            return None
        order = sorted(hits, key=lambda i: -self.members[i])
        names = list(dict.fromkeys(self.display[i] for i in order if self.ids[i] != self.ids[order[0]]))
        return Match(int(self.ids[order[0]]), self.display[order[0]], 100.0, names[:5])

    def searched(self, text: str) -> tuple[Match | None, str]:
        """AniList's best answer for ``text`` that the model knows (adult anime left out), and what to say when
        there is none."""
        if self.search is None:
            return None, "Titles match MAL's name, English name or Japanese name."
        try:
            found = self.search(text)
        except UserError as err:
            return None, f"AniList, which knows English titles, could not be asked ({str(err).split(';')[0]})."
        known = {int(a): i for i, a in reversed(list(enumerate(self.ids)))}
        for anime_id, adult in found:
            if anime_id in known and not adult and not self.adult[known[anime_id]]:
                logger.info("%r is %r by AniList's search", text, self.display[known[anime_id]])
                return Match(anime_id, self.display[known[anime_id]], 100.0), ""
        return None, "AniList's search found no anime this model knows."


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", str(text)).casefold()
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+", plain)
