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
are added, so the original comes before its sequels), or its lowest MAL ID when it has no series.

Titles alone miss sequels whose title only adds a word to a one-word name (``Mushishi Zoku Shou``),
and put a series inside a larger family of the same name (``Mobile Suit Gundam 00`` among the
Gundams). The ratings tell: almost everyone who rated a sequel rated what came before it, while
few people rated it without. :func:`co_watch_prerequisites` finds, when the model is stored, each
anime's **prerequisite**: an older anime (lower MAL ID) that at least ``min_share`` of its raters
rated, at least ``min_lift`` times as often as everyone does, and whose whole title is in its own
(so a show everybody watched is nobody's prerequisite, and neither is an unrelated one). The share is
half, not most, and less where the data shows less of each audience (:func:`typical_share`): on the demo
data (each user keeps a random share of a real list) only 52% of Noragami Aragoto's raters rated
Noragami and 37% of Motto To LOVE-Ru's rated To LOVE-Ru, while a title-linked sequel's raters rated what
came first 40% of the time (real lists: 100%), so the share asked there is 20%.

``recs.sequels`` then decides what a person sees: ``hide_unstarted`` (no later entry of a franchise
whose first entry they have not rated, and nothing whose prerequisite they have not rated),
``hide_all`` (nothing of a franchise already on their list, nor anything after what is on it) or
``show``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from animerec.config import SEQUEL_MODES
from animerec.ease import interaction_matrix
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
_LEADING = re.compile(r"^(?:gekijouban|eiga|zoku)\s")  # zoku: "continuation" (Zoku Natsume Yuujinchou)


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


def hidden_by_sequels(franchise: np.ndarray, first: np.ndarray, rated: np.ndarray, mode: str,
                      prerequisite: np.ndarray | None = None) -> np.ndarray:
    """Which anime ``[num_anime]`` a person with ``rated`` (anime indices) should not be shown.

    ``franchise`` ``[num_anime]``: each anime's franchise ID; ``first`` ``[num_anime]``: whether it
    is its franchise's first entry; ``prerequisite`` ``[num_anime]``: each anime's prerequisite by
    co-watching (an anime index, -1 for none). ``hide_unstarted``: later entries of franchises whose
    first entry is not rated, and anime whose prerequisite is not rated; ``hide_all``: every entry of a
    franchise on the list, and anime whose prerequisite is on it; ``show``: nothing.
    """
    if mode not in SEQUEL_MODES:
        raise RecommenderError(f"sequels must be one of {', '.join(SEQUEL_MODES)}; got {mode!r}.")
    hidden = np.zeros(len(franchise), bool)
    if mode == "show":
        return hidden
    rated = np.asarray(rated, np.int64)
    needs = np.full(len(franchise), -1) if prerequisite is None else np.asarray(prerequisite)
    after_rated = (needs >= 0) & np.isin(needs, rated)
    if mode == "hide_all":
        return np.isin(franchise, franchise[rated]) | after_rated
    started = np.isin(franchise, franchise[rated[first[rated]]])  # their first entry is rated
    return (~first & ~started) | ((needs >= 0) & ~after_rated)


@dataclass(frozen=True)
class SequelLinks:
    """``prerequisite`` ``[num_anime]``: each anime's prerequisite by co-watching (an anime index, -1 for none),
    stored with the model (``sequels.npz``) so that serving does not recompute it."""

    FORMAT_VERSION: ClassVar[int] = 1
    prerequisite: np.ndarray

    def arrays(self) -> dict:
        return {"prerequisite": np.asarray(self.prerequisite, np.int32)}

    @classmethod
    def from_arrays(cls, arrays) -> "SequelLinks":
        return cls(np.asarray(arrays["prerequisite"], np.int64))


def co_watch_prerequisites(users: np.ndarray, anime: np.ndarray, anime_ids: np.ndarray, titles, *, min_raters: int = 5,
                           min_share: float = 0.5, min_lift: float = 2.0) -> np.ndarray:
    """``[num_anime]`` each anime's prerequisite (an anime index, -1 for none) from who rated what.

    ``users``, ``anime`` ``[n]``: the (user index, anime index) of every known rating; ``anime_ids``
    ``[num_anime]`` MAL IDs and ``titles`` ``[num_anime]`` by anime index. Anime rated by at least
    ``min_raters`` people get one: among older anime whose whole title (without case and punctuation) is
    in theirs (``Mushishi`` in ``Mushishi Zoku Shou``, ``Mobile Suit Gundam 00`` in ``Mobile Suit Gundam
    00 Second Season``) or differs from theirs only in its last word (``Durarara!!x2 Ten`` for ``Durarara!!x2
    Ketsu``; three words at least), rated by at least ``min_share`` of their raters (times :func:`typical_share` where the
    data shows less of each audience) and ``min_lift`` times the base rate, the one rated by most of them (the
    latest on a tie: a third season's is the second).
    """
    num_anime = len(anime_ids)
    raters = interaction_matrix(users, anime, int(np.max(users, initial=-1)) + 1, num_anime).tocsc()  # by anime
    counts = np.diff(raters.indptr)
    base = counts / max(len(np.unique(users)), 1)
    plain = [_plain(t) for t in titles]
    by_title: dict[str, list[int]] = {}
    siblings: dict[str, list[int]] = {}  # titles of 3+ words by all their words but the last: "durarara x2 ..."
    for p, title in enumerate(plain):
        if len(title) >= 2:
            by_title.setdefault(title, []).append(p)
        if len(title.split()) >= 3:
            siblings.setdefault(title.rsplit(" ", 1)[0], []).append(p)
    min_share = min(min_share, min_share * typical_share(raters, counts, titles, anime_ids, min_raters))
    prerequisite = np.full(num_anime, -1, np.int64)
    rated_s = np.zeros(raters.shape[0], bool)
    for s in np.flatnonzero(counts >= min_raters):
        words = plain[s].split()  # every run of whole words of its title: the older anime so named are candidates
        found = {p for i in range(len(words)) for j in range(i + 1, len(words) + 1)
                 for p in by_title.get(" ".join(words[i:j]), ()) if anime_ids[p] < anime_ids[s]}
        if len(words) >= 3:  # and an older sibling: Durarara!!x2 Ketsu after Durarara!!x2 Ten
            found |= {p for p in siblings.get(" ".join(words[:-1]), ()) if anime_ids[p] < anime_ids[s]}
        if not found:
            continue
        mine = raters.indices[raters.indptr[s]:raters.indptr[s + 1]]
        rated_s[mine] = True
        share = {p: rated_s[raters.indices[raters.indptr[p]:raters.indptr[p + 1]]].sum() / counts[s] for p in found}
        rated_s[mine] = False
        ok = [p for p in found if share[p] >= min_share and share[p] >= min_lift * base[p]]
        if ok:
            prerequisite[s] = max(ok, key=lambda p: (share[p], anime_ids[p]))
    return prerequisite


def typical_share(raters, counts: np.ndarray, titles, anime_ids: np.ndarray, min_raters: int) -> float:
    """How much of a sequel's audience this data shows rating what came first: the median, over the anime the title
    rules put after an older entry of the same stem (seasons, films), of the share of their raters who rated the
    oldest; 1 when fewer than 10 such anime have ``min_raters`` raters. Real lists: 1.0 on the sample and the dev
    set; the demo data (each user keeps a random share of a real list): 0.4. ``raters``: CSC ``[users, anime]``."""
    stems = [stem(t) for t in titles]
    oldest: dict[str, int] = {}
    for position in np.argsort(anime_ids, kind="stable"):
        oldest.setdefault(stems[position], int(position))
    shares = []
    for s in np.flatnonzero(counts >= min_raters):
        p = oldest.get(stems[s], s)
        if p != s and stems[s]:
            mine = raters.indices[raters.indptr[s]:raters.indptr[s + 1]]
            theirs = raters.indices[raters.indptr[p]:raters.indptr[p + 1]]
            shares.append(len(np.intersect1d(mine, theirs, assume_unique=True)) / counts[s])
    return float(np.median(shares)) if len(shares) >= 10 else 1.0
