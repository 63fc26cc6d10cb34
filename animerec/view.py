"""One answer, laid out for people: the heading, the notes and the tables that the CLI prints and the page shows.

:func:`view` reads a JSON-ready answer of :meth:`animerec.service.RecommendationService.answer`; the CLI prints
the :class:`View` as text tables, the page renders it with its template, so both say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Table:
    id: str  # "results" or "users": the page's element id
    caption: str
    rows: list[dict]


@dataclass(frozen=True)
class View:
    heading: str
    notes: list[str]
    tables: list[Table]


def list_note(listed: dict) -> str:
    """What was read of anyone's list: ``{"source", "listed", "used", "skipped"}`` as one sentence."""
    used = f"{listed['used']} rated {'one' if listed['used'] == 1 else 'ones'} used"
    return (f"{listed['source']}: {listed['listed']} anime listed, {used}"
            + (f", {listed['skipped']} unknown to the model skipped" if listed["skipped"] else "")
            + ". Nothing on it is recommended back.")


def view(answer: dict) -> View:
    """The heading, notes and tables of one answer (``kind`` similar_anime, similar_users or rating_recs)."""
    asked = answer["query"]
    if answer["kind"] == "similar_anime":
        also = asked.get("also_matched") or []
        notes = [f"The most-watched of the anime so titled; also: {'; '.join(also)}."] if also else []
        return View(f"Anime similar to {asked['title']} (MAL {asked['anime_id']})", notes,
                    [Table("results", "", answer["anime"])])
    notes = [list_note(asked["list"])] if "list" in asked else []
    who = "this list" if "list" in asked else f"user {asked['user_id']}"
    unseen = "not on the list" if "list" in asked else f"not rated by user {asked['user_id']}"
    if answer["kind"] == "similar_users":
        genres = ", ".join(f"{genre} {count}" for genre, count in answer["genres"].items())
        return View(f"Users most similar to {who}", [*notes, f"Favourite genres of {who}: {genres or 'none'}"],
                    [Table("users", "", answer["users"]),
                     Table("results", f"Anime users similar to {who} love, {unseen}", answer["anime"])])
    heading = "Recommended for you" if "list" in asked else f"Recommended for user {asked['user_id']}"
    return View(f"{heading}, {unseen}", notes, [Table("results", "", answer["anime"])])


# the columns that fit a terminal, in order: who or what, why, the score, and where to read more
NARROW = ("user_id", "title", "in_common", "reason", "similarity", "predicted_rating",
          "similar_users_favouring", "rating_count", "url")


def fitted(frame: pd.DataFrame, width: int) -> str:
    """``frame``'s :data:`NARROW` columns as text no wider than ``width``: the MAL link where it fits, else the
    MAL ID; the longest texts (title, reason, in common) cut to one length, with an ellipsis, until the table fits."""
    frame = frame[[c for c in NARROW if c in frame]].copy()
    if "url" in frame and width < 120:
        frame["url"] = frame["url"].str.rsplit("/", n=1).str[-1].astype(int)
        frame = frame.rename(columns={"url": "mal_id"})
    texts = [c for c in ("title", "reason", "in_common") if c in frame]
    for _ in range(20):
        text = frame.to_string(index=False)
        over = max(map(len, text.splitlines()), default=0) - width
        if over <= 0 or not texts:
            return text
        sizes = [int(frame[c].astype(str).str.len().max()) for c in texts]
        cap = max(sizes)  # the longest texts are cut to one length, the others left whole
        while cap > 8 and sum(max(0, size - cap) for size in sizes) < over:
            cap -= 1
        for c in texts:
            frame[c] = [v if len(str(v)) <= cap else str(v)[:cap - 1] + "…" for v in frame[c]]
        texts = texts if cap > 8 else []
    return text
