"""Why an anime is recommended, in words a fan reads.

- Recommendations from a list (or a dataset user's ratings): the one to three anime the person liked
  (rated at or above their own mean) that contribute most; never one they rated lower. With the EASE
  ranking head a listed anime ``i`` contributes ``rating_i * B[i, j]`` to anime ``j``'s score; without
  one, ``rating_i`` times the cosine of the two anime's vectors.
- Similar anime: the genres the two share, and how many of the people who liked the query (rated it 8
  or more) liked the other too.
- What similar users love: how many of the nearest users count it among their favourites.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

LIKED = 8.0  # a rating this high is "liked"


class Reasons:
    """Reasons for one model's answers (``bundle``: a :class:`animerec.bundle.ModelBundle`)."""

    def __init__(self, bundle) -> None:
        self.bundle = bundle

    @cached_property
    def _liked_by(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR by anime index: the users who liked each anime (``users[indptr[a]:indptr[a + 1]]``, sorted)."""

        ratings = self.bundle.ratings
        liked = (ratings["rating"] >= LIKED).to_numpy()
        anime, users = ratings["anime_index"].to_numpy()[liked], ratings["user_index"].to_numpy()[liked]
        # a counting sort by anime (scipy's COO -> CSR): seconds at full MAL size, where a lexsort took half a minute
        by_anime = sp.csr_matrix((np.ones(len(anime), np.int8), (anime, users)),
                                 shape=(len(self.bundle.anime_ids), len(self.bundle.user_ids)))
        return by_anime.indptr, by_anime.indices

    def warm(self) -> None:
        """Build the tables the reasons read (a server does this at start, not on its first query)."""
        _ = self._liked_by, self._names, self._genres

    def _likers(self, index: int) -> np.ndarray:
        indptr, users = self._liked_by
        return users[indptr[index]:indptr[index + 1]]

    @cached_property
    def _names(self) -> dict[int, str]:
        return dict(zip(self.bundle.anime["anime_id"].to_numpy(), self.bundle.anime["name"].astype(str)))

    @cached_property
    def _genres(self) -> dict[int, list[str]]:
        return {int(a): [g.strip() for g in str(gs).split(",") if g.strip()]
                for a, gs in zip(self.bundle.anime["anime_id"], self.bundle.anime["genres"].fillna(""))}

    def similar(self, query_id: int, anime_ids: np.ndarray) -> list[str]:
        """For anime similar to ``query_id``: shared genres, and how many who liked one liked the other."""
        query = self.bundle.anime_index(int(query_id))
        fans = self._likers(query)
        mine = set(self._genres.get(int(query_id), []))
        out = []
        for anime_id in anime_ids:
            parts = []
            shared = [g for g in self._genres.get(int(anime_id), []) if g in mine]
            if shared:
                parts.append("both " + ", ".join(shared[:3]))
            both = len(np.intersect1d(fans, self._likers(self.bundle.anime_index(int(anime_id))), assume_unique=True))
            if len(fans) and both:
                parts.append(f"{both} of the {len(fans)} who liked {self._names.get(int(query_id), query_id)} "
                             f"liked it too")
            out.append("; ".join(parts) or "watched by the same people")
        return out

    def from_list(self, rated: np.ndarray, ratings: np.ndarray, anime_ids: np.ndarray, *, titles: bool = False,
                  limit: int = 3) -> tuple[list[str], list[list[dict]]]:
        """Why each of ``anime_ids`` is recommended to someone who rated ``rated`` (anime indices) with ``ratings``
        (1-10): ``(reasons, because)``, one per anime. ``because`` cites the ``limit`` anime the person liked (rated
        at or above their own mean) that contribute most to the row's score, as ``{"anime_id", "title", "rating"}``;
        ``titles``: the list is liked titles, worded "because you like X", with no rating (None)."""
        rated = np.asarray(rated, np.int64)
        ratings = np.asarray(ratings, np.float64)
        liked = ratings >= ratings.mean() if len(ratings) else np.zeros(0, bool)
        rated, ratings = rated[liked], ratings[liked]
        targets = np.array([self.bundle.anime_index(int(a)) for a in anime_ids], np.int64)
        contribution = self._contributions(rated, ratings, targets)  # [len(rated), len(targets)]
        because = []
        for column in range(len(targets)):
            values = contribution[:, column]
            best = [i for i in np.argsort(-values, kind="stable")[:limit] if values[i] > 0]
            because.append([{"anime_id": int(self.bundle.anime_ids[rated[i]]),
                             "title": self._names.get(int(self.bundle.anime_ids[rated[i]]), "?"),
                             "rating": None if titles else float(ratings[i])} for i in best])
        return [_wording(cited) for cited in because], because

    def _contributions(self, rated: np.ndarray, ratings: np.ndarray, targets: np.ndarray) -> np.ndarray:
        ranker = self.bundle.scorer.ranker
        if ranker is not None:
            return ranker.contributions(rated, targets) * ratings[:, None]
        vectors = self.bundle.scorer.anime_vectors
        return (vectors[rated] @ vectors[targets].T) * ratings[:, None]

    @staticmethod
    def in_common(mine: tuple[np.ndarray, np.ndarray], theirs: list[tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
        """What a person shares with each similar user: ``mine`` and each of ``theirs`` are ``(anime indices,
        ratings)``; ``both_liked`` counts the anime both rated at or above their own mean, ``both_rated`` those
        both rated, and ``in_common`` says it in words ("liked 14 of the same anime, 40 rated by both")."""
        def liked(rated, ratings):
            return rated[ratings >= ratings.mean()] if len(ratings) else rated

        my_liked = liked(*mine)
        both_liked = [len(np.intersect1d(my_liked, liked(*other))) for other in theirs]
        both_rated = [len(np.intersect1d(mine[0], other[0])) for other in theirs]
        words = [f"liked {n} of the same anime, {r} rated by both" for n, r in zip(both_liked, both_rated)]
        return pd.DataFrame({"in_common": words, "both_liked": both_liked, "both_rated": both_rated})

    @staticmethod
    def neighbours(counts: np.ndarray, neighbours: int) -> list[str]:
        """For what similar users love: how many of the nearest users count each among their favourites."""
        return [f"a favourite of {int(c)} of your {neighbours} nearest users" for c in counts]


def _wording(cited: list[dict]) -> str:
    """One row's reason from the anime it cites (:meth:`Reasons.from_list`)."""
    if not cited:
        return "liked by people whose lists resemble yours"
    if cited[0]["rating"] is None:
        return "because you like " + ", ".join(c["title"] for c in cited)
    return "because you rated " + ", ".join(f"{c['title']} ({c['rating']:g})" for c in cited)
