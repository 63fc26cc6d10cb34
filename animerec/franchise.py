"""Franchises from titles: which anime are seasons, films and extras of the same story.

The 2020 Kaggle layout has no relation data, so a franchise is found from the titles, with care:

1. A title's **stem**: lower-cased and stripped of accents and punctuation; cut at a ``": "``
   subtitle (``Shingeki no Kyojin: The Final Season``), at ``/`` (``Fate/Zero``) and at `` - ``;
   then, repeatedly, the trailing season markers are dropped: ``2nd Season``, ``Season 3``,
   ``Part 2``, ``Final Season``, ``Movie 2``, ``OVA``, ``Specials``, Roman numerals (``Overlord
   III``), bare numbers (``Steins;Gate 0``), ``R2``, and marks such as ``°`` and ``'``
   (``Gintama°``, ``Gintama'``). Words glued to ``monogatari`` (``Bakemonogatari``,
   ``Nisemonogatari``) are the Monogatari series; ``... no Monogatari`` is not.
2. A stem that is another anime's whole stem plus one or two words (``mob psycho mini`` and ``mob
   psycho``, ``tokyo ghoul re`` and ``tokyo ghoul``) joins that franchise when the shorter stem has
   two or more words: one common word never swallows a catalogue ("Monster" and "Monster Musume",
   "Tokyo" and "Tokyo Magnitude 8.0", "One" and "One Piece" stay apart).

A franchise's **first entry** is its TV series with the lowest MAL ID (MAL numbers anime as they
are added, so the original comes before its sequels), or its lowest MAL ID when it has no series. ``recs.sequels`` then decides what a person sees:
``hide_unstarted`` (no later entry of a franchise whose first entry they have not rated),
``hide_all`` (nothing of a franchise already on their list) or ``show``.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd

from animerec.config import SEQUEL_MODES
from animerec.errors import RecommenderError

MIN_ROOT = 5  # characters a stem needs to absorb the longer stems that begin with it
MAX_TAIL = 2  # words that may follow it

_ORDINALS = ("first|second|third|fourth|fifth|sixth|seventh|final|last|new|1st|2nd|3rd|4th|5th|6th|7th|8th|9th|"
             r"\d+th")
_TRAILING = [re.compile(p) for p in (
    rf"\s(?:{_ORDINALS})\s(?:season|series|stage|part|cour)$",
    r"\s(?:season|series|part|cour|stage|movie|film|ova|ona|oad|special|specials|recap|recaps|tv|the movie)\s\d+$",
    r"\s(?:season|part|cour)\s(?:i|ii|iii|iv|v|vi)$",
    r"\s(?:movie|the movie|film|ova|ovas|ona|oad|specials|special|recap|recaps|picture drama|pilot|tv|"
    r"gekijouban|shorts|mini|omake)$",
    r"\s(?:i|ii|iii|iv|v|vi|vii|viii|ix|x)$",
    r"\sr\d$",
    r"\s\d+$",
    r"\s(?:season|part|cour|series)$",
)]
_LEADING = re.compile(r"^(?:gekijouban|eiga)\s")


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^0-9a-z]+", " ", text).strip()


def stem(title: str) -> str:
    """The franchise stem of one title (see the module's docstring)."""
    raw = str(title).strip()
    for cut in (": ", " - ", "/"):
        head = raw.split(cut, 1)[0]
        if _plain(head):
            raw = head
    text = _plain(raw)
    if not text:
        return _plain(title)
    text = re.sub(r"\b\w+monogatari\b", "monogatari", text) if re.search(r"\w+monogatari\b", text) else text
    changed = True
    while changed:  # one marker at a time, the most specific first: "season 2 movie" -> "season 2" -> ""
        changed = False
        for pattern in (_LEADING, *_TRAILING):
            shorter = pattern.sub("", text).strip()
            if shorter and shorter != text:
                text, changed = shorter, True
                break
    return text


def franchise_ids(anime: pd.DataFrame) -> pd.Series:
    """``anime_id`` -> franchise (the MAL ID of its first entry), for every anime of a catalogue."""
    ids = anime["anime_id"].to_numpy(np.int64)
    stems = [stem(name) for name in anime["name"].astype(str)]
    known = set(stems)
    root = {}
    for s in set(stems):
        words = s.split(" ")
        root[s] = s
        # the shortest other stem it begins with, if that has 2+ words and only 1-2 words follow it:
        # "mob psycho" + "mini", "tokyo ghoul" + "re", never "monster" + "musume no iru nichijou"
        for end in range(max(2, len(words) - MAX_TAIL), len(words)):
            prefix = " ".join(words[:end])
            if prefix in known and len(prefix) >= MIN_ROOT:
                root[s] = prefix
                break
    frame = pd.DataFrame({"anime_id": ids, "key": [root[s] for s in stems],
                          "tv": (anime["type"].astype(str) == "TV").to_numpy()})
    # the first entry: the lowest MAL ID among its TV series if it has one (a film made before the
    # series, as for Clannad, is not where people start), else the lowest MAL ID
    first = frame.sort_values(["key", "tv", "anime_id"], ascending=[True, False, True]).groupby("key")["anime_id"].first()
    return pd.Series(frame["key"].map(first).to_numpy(), index=ids, name="franchise")


def hidden_by_sequels(franchise: np.ndarray, first: np.ndarray, rated: np.ndarray, mode: str) -> np.ndarray:
    """Which anime ``[num_anime]`` a person with ``rated`` (anime indices) should not be shown.

    ``franchise`` ``[num_anime]``: each anime's franchise ID; ``first`` ``[num_anime]``: whether it
    is its franchise's first entry. ``hide_unstarted``: later entries of franchises whose first entry
    is not rated; ``hide_all``: every entry of a franchise on the list; ``show``: nothing.
    """
    if mode not in SEQUEL_MODES:
        raise RecommenderError(f"sequels must be one of {', '.join(SEQUEL_MODES)}; got {mode!r}.")
    hidden = np.zeros(len(franchise), bool)
    if mode == "show":
        return hidden
    rated = np.asarray(rated, np.int64)
    on_list = np.isin(franchise, franchise[rated])
    if mode == "hide_all":
        return on_list
    started = np.isin(franchise, franchise[rated[first[rated]]])  # their first entry is rated
    return ~first & ~started
