"""Why an anime is recommended, in words a fan reads.

- Recommendations from a list (or a dataset user's ratings): the one to three anime on the list that
  contribute most. With the EASE ranking head a listed anime ``i`` contributes ``rating_i * B[i, j]``
  to anime ``j``'s score; without one, ``rating_i`` times the cosine of the two anime's vectors.
- Similar anime: the genres the two share, and how many of the people who liked the query (rated it 8
  or more) liked the other too.
- What similar users love: how many of the nearest users count it among their favourites.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
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

    def from_list(self, rated: np.ndarray, ratings: np.ndarray, anime_ids: np.ndarray, limit: int = 3) -> list[str]:
        """For recommendations to someone who rated ``rated`` (anime indices) with ``ratings`` (1-10): the
        ``limit`` anime on their list that contribute most to each one."""
        rated = np.asarray(rated, np.int64)
        ratings = np.asarray(ratings, np.float64)
        targets = np.array([self.bundle.anime_index(int(a)) for a in anime_ids], np.int64)
        contribution = self._contributions(rated, ratings, targets)  # [len(rated), len(targets)]
        out = []
        for column in range(len(targets)):
            values = contribution[:, column]
            best = [i for i in np.argsort(-values, kind="stable")[:limit] if values[i] > 0]
            if not best:
                out.append("popular with people whose lists are like yours")
                continue
            titles = [f"{self._names.get(int(self.bundle.anime_ids[rated[i]]), '?')} ({ratings[i]:g})" for i in best]
            out.append("because you rated " + ", ".join(titles))
        return out

    def _contributions(self, rated: np.ndarray, ratings: np.ndarray, targets: np.ndarray) -> np.ndarray:
        ranker = self.bundle.scorer.ranker
        if ranker is not None:
            position = np.full(ranker.num_anime, -1, np.int64)
            position[ranker.items] = np.arange(len(ranker.items))
            rows, cols = position[rated], position[targets]
            out = np.zeros((len(rated), len(targets)))
            have_rows, have_cols = rows >= 0, cols >= 0
            if have_rows.any() and have_cols.any():
                block = ranker.weights[np.ix_(rows[have_rows], cols[have_cols])]
                out[np.ix_(have_rows, have_cols)] = block * ratings[have_rows, None]
            return out
        vectors = self.bundle.scorer.anime_vectors
        return (vectors[rated] @ vectors[targets].T) * ratings[:, None]

    @staticmethod
    def neighbours(counts: np.ndarray, neighbours: int) -> list[str]:
        """For what similar users love: how many of the nearest users count each among their favourites."""
        return [f"a favourite of {int(c)} of your {neighbours} nearest users" for c in counts]
