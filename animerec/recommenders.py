"""The recommenders, behind one call shape (after implicit's ``RecommenderBase``).

Every recommender answers the same three questions and always returns ``(ids, scores)``,
best first, as numpy arrays of original MAL IDs (anime) or dataset user IDs (users). A user is
a user ID from the training data or a :class:`animerec.foldin.Person` folded in from anyone's
list (their list is never recommended back):

- ``recommend(user_id, n=10, filter_already_rated=True, filter_items=None, filters=None)``
- ``similar_items(anime_id, n=10, filter_items=None, filters=None)``
- ``similar_users(user_id, n=10)``

Inputs are checked first, with errors that say what to fix. :class:`EmbeddingRecommender`
uses the trained embeddings: cosine between anime vectors, cosine between user vectors, and the
model's predicted rating (1-10) of every anime. :class:`UserBasedRecommender` recommends what
the most similar users count among their favourites. :class:`ItemFilter` restricts any of them
by genre, type and MAL score.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable

import numpy as np
import pandas as pd

from animerec.bundle import ModelBundle
from animerec.config import ItemFilter
from animerec.errors import RecommenderError
from animerec.foldin import Person, person_ranking, person_scores
from animerec.franchise import franchise_ids, hidden_by_sequels
from animerec.titles import is_adult

logger = logging.getLogger(__name__)


def _norm(text: str) -> str:
    """Case, spacing and punctuation insensitive key: "slice of life" == "Slice of Life", "scifi" == "Sci-Fi"."""
    return re.sub(r"[^0-9a-z]+", "", str(text).lower())


@dataclass
class Catalogue:
    """The anime that have embeddings, indexed by ``anime_index``."""

    frame: pd.DataFrame  # one row per anime_index, in order
    genre_sets: list = field(repr=False, default_factory=list)
    known_genres: dict = field(repr=False, default_factory=dict)  # normalised -> display name

    @classmethod
    def from_bundle(cls, bundle: ModelBundle) -> "Catalogue":
        rated = bundle.anime[bundle.anime["anime_index"] >= 0].sort_values("anime_index")
        frame = pd.DataFrame({"anime_id": bundle.anime_ids})
        frame = frame.merge(rated.drop(columns=["anime_index"]), on="anime_id", how="left")
        frame["genres"] = frame["genres"].fillna("")
        genre_sets = [frozenset(_norm(g) for g in gs.split(",") if g.strip()) for gs in frame["genres"]]
        known = {}
        for names in frame["genres"]:
            for g in names.split(","):
                if g.strip():
                    known.setdefault(_norm(g), g.strip())
        return cls(frame.reset_index(drop=True), genre_sets, known)

    @cached_property
    def genre_names(self) -> list[list[str]]:
        """Each anime's genres as the catalogue spells them, in its order."""
        return [[g.strip() for g in names.split(",") if g.strip()] for names in self.frame["genres"]]

    @cached_property
    def adult(self) -> np.ndarray:
        """``[num_anime]`` bool: adult anime (MAL hides them by default; :func:`animerec.titles.is_adult`)."""
        return is_adult(self.frame)

    def mask(self, filters: ItemFilter | None) -> np.ndarray:
        allowed = np.ones(len(self.frame), dtype=bool)
        if filters is None or filters.is_empty():
            return allowed
        if filters.genres:
            wanted = set()
            for genre in filters.genres:
                key = _norm(genre)
                if key not in self.known_genres:
                    raise RecommenderError(
                        f"Unknown genre {genre!r}. Known genres: {', '.join(sorted(self.known_genres.values()))}."
                    )
                wanted.add(key)
            if filters.genre_match == "all":
                allowed &= np.array([wanted <= s for s in self.genre_sets])
            else:
                allowed &= np.array([not wanted.isdisjoint(s) for s in self.genre_sets])
        if filters.types:  # checked and spelled as the catalogue does by ItemFilter
            allowed &= self.frame["type"].isin(filters.types).to_numpy()
        if not filters.adult:
            allowed &= ~self.adult
        if filters.min_members is not None:
            allowed &= self.frame["members"].fillna(0).to_numpy() >= int(filters.min_members)
        if filters.max_episodes is not None:  # an unknown count (still airing) is not a short show
            allowed &= self.frame["episodes"].to_numpy(float, na_value=np.inf) <= filters.max_episodes
        score = self.frame["score"].to_numpy(dtype=float)
        if filters.min_score is not None:
            allowed &= score >= float(filters.min_score)
        if filters.max_score is not None:
            allowed &= score <= float(filters.max_score)
        return allowed


@dataclass(frozen=True)
class FavoriteRule:
    """Which of a user's rated anime count as favourites: the top ``fraction`` by rank, floored.

    Tie-aware: an anime is a favourite when fewer than ``fraction`` of the user's ratings are
    strictly higher than its rating (equal ratings share the better rank, so they are in or out
    together), and its rating is at least ``min_rating``. A user who rated everything 5 has no
    favourites; one who rated everything 9 loves them all; a 10 is always a favourite.
    """

    fraction: float = 0.2
    min_rating: float = 7.0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise RecommenderError(f"favorite_fraction must be in (0, 1], got {self.fraction}.")
        if not 1 <= self.min_rating <= 10:
            raise RecommenderError(f"favorite_min_rating must be within 1-10, got {self.min_rating}.")

    @classmethod
    def from_config(cls, recs) -> "FavoriteRule":
        """From the config's ``recs`` section."""
        return cls(float(recs.favorite_fraction), float(recs.favorite_min_rating))

    def mask(self, ratings: np.ndarray) -> np.ndarray:
        """``[n]`` bool: which of one user's ``ratings`` ``[n]`` are favourites."""
        ratings = np.asarray(ratings, dtype=np.float32)
        higher = len(ratings) - np.searchsorted(np.sort(ratings), ratings, side="right")
        return (higher < self.fraction * len(ratings)) & (ratings >= self.min_rating)


def _top(scores: np.ndarray, allowed: np.ndarray, n: int, tiebreak: np.ndarray | None = None):
    """Indices and scores of the n best allowed entries, best first (ties: tiebreak desc, then index)."""
    candidates = np.flatnonzero(allowed)
    if len(candidates) == 0:
        return candidates, np.empty(0, dtype=np.float32)
    values = scores[candidates]
    if len(candidates) > n * 4 and tiebreak is None:
        keep = np.argpartition(-values, n - 1)[:n]
        candidates, values = candidates[keep], values[keep]
    keys = (candidates, -tiebreak[candidates], -values) if tiebreak is not None else (candidates, -values)
    order = np.lexsort(keys)[:n]
    return candidates[order], values[order]


class Recommender(ABC):
    """One call shape for every recommender; subclasses implement the three queries."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.catalogue = Catalogue.from_bundle(bundle)
        self._starts, self._rated_anime, self._rated_value = bundle.ratings_by_user  # sorted once per model
        self.rating_counts = np.diff(self._starts)

    # input checks ------------------------------------------------------------------------------
    @staticmethod
    def _check_n(n: int) -> int:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise RecommenderError(f"n must be a positive integer, got {n!r}.")
        return int(n)

    def rated(self, user_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(anime indices, ratings) of one user."""
        s, e = self._starts[user_index], self._starts[user_index + 1]
        return self._rated_anime[s:e], self._rated_value[s:e]

    def ratings_of(self, user) -> tuple[np.ndarray, np.ndarray]:
        """(anime indices, 1-10 ratings) of a user ID or a folded-in :class:`~animerec.foldin.Person`."""
        if isinstance(user, Person):
            return user.rated, user.ratings
        return self.rated(self.bundle.user_index(int(user)))

    def seen(self, user) -> np.ndarray:
        """Anime indices never to recommend to a user: what they rated, or everything on a person's list."""
        return user.listed if isinstance(user, Person) else self.rated(self.bundle.user_index(int(user)))[0]

    def user_vector(self, user) -> tuple[np.ndarray, int | None]:
        """The unit user vector ``[d]`` and the user's index (None for a folded-in person)."""
        if isinstance(user, Person):
            return user.vector, None
        index = self.bundle.user_index(int(user))
        return self.bundle.scorer.user_vectors[index], index

    @cached_property
    def franchises(self) -> tuple[np.ndarray, np.ndarray]:
        """``(franchise [num_anime], first entry [num_anime] bool)`` by ``anime_index`` (from the whole catalogue)."""
        whole = franchise_ids(self.bundle.anime)
        franchise = whole.loc[self.bundle.anime_ids].to_numpy(np.int64)
        return franchise, franchise == self.bundle.anime_ids

    def _allowed(self, filters: ItemFilter | None, filter_items: Iterable[int] | None,
                 started: np.ndarray | None = None) -> np.ndarray:
        """The anime that may be returned; ``started`` (anime indices: what the user rated, or the query)
        is what ``filters.sequels`` judges franchises by."""
        allowed = self.catalogue.mask(filters)
        if filters is not None and filters.sequels != "show":
            franchise, first = self.franchises
            links = self.bundle.sequels.prerequisite if self.bundle.sequels is not None else None
            allowed &= ~hidden_by_sequels(franchise, first, np.zeros(0, np.int64) if started is None else started,
                                          filters.sequels, links)
        if filter_items is not None:
            for anime_id in filter_items:
                allowed[self.bundle.anime_index(int(anime_id))] = False
        return allowed

    def _pick(self, scores: np.ndarray, allowed: np.ndarray, n: int, filters: ItemFilter | None,
              tiebreak: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best allowed anime and their scores; with ``filters.popularity_damping`` = b they are
        chosen by score / members^b (score * members^b for a negative score), the scores shown unchanged."""
        beta = 0.0 if filters is None else float(filters.popularity_damping)
        if not beta:  # its range is ItemFilter's rule
            return _top(scores, allowed, n, tiebreak)
        damping = np.power(np.maximum(self.catalogue.frame["members"].fillna(0).to_numpy(np.float64), 1.0), beta)
        scores = np.asarray(scores, np.float64)
        key = np.where(scores > 0, scores / damping, scores * damping)
        top, _ = _top(key, allowed, n, tiebreak)
        return top, np.asarray(scores[top], np.float32)

    def _answer(self, indices: np.ndarray, scores: np.ndarray, what: str, filters: ItemFilter | None):
        if len(indices) == 0:
            raise RecommenderError(
                f"No {what} is left after the filters ({_describe(filters)}); widen the genres, types or score range."
            )
        return self.bundle.anime_ids[indices], np.asarray(scores, dtype=np.float32)

    # the call shape -------------------------------------------------------------------------------
    @abstractmethod
    def recommend(self, user_id: int, n: int = 10, *, filter_already_rated: bool = True,
                  filter_items: Iterable[int] | None = None, filters: ItemFilter | None = None):
        """Anime for a user: ``(anime_ids, scores)``."""

    def similar_items(self, anime_id: int, n: int = 10, *, filter_items: Iterable[int] | None = None,
                      filters: ItemFilter | None = None):
        """Anime most similar to one anime, the anime itself excluded.

        With the model's taste index (``model.taste.kind=blend``): its blend of the taste model's
        vectors, who-rated-what co-occurrence and content (animerec/taste/index.py); without one, the
        cosine of the rating model's anime embeddings (the seed's).
        """
        n = self._check_n(n)
        index = self.bundle.anime_index(int(anime_id))
        if self.bundle.taste is not None:
            scores = self.bundle.taste.similar_items(index)
        else:
            vectors = self.bundle.scorer.anime_vectors
            scores = np.clip(vectors @ vectors[index], 0.0, 1.0)  # a cosine, shown in [0, 1]
        allowed = self._allowed(filters, filter_items, started=np.array([index]))
        allowed[index] = False
        return self._answer(*self._pick(scores, allowed, n, filters), "anime", filters)

    def similar_users(self, user_id, n: int = 10):
        """Users most similar to a user ID or a folded-in person: ``(user_ids, similarities)``.

        With the model's taste index: its blend of taste vectors and shared anime (cosine of who
        rated what); without one, the cosine of the rating model's user embeddings.
        """
        n = self._check_n(n)
        taste = self.bundle.taste
        if taste is not None:
            index = None if isinstance(user_id, Person) else self.bundle.user_index(int(user_id))
            scores = taste.similar_users(index, listed=user_id.rated if index is None else None)
        else:
            vector, index = self.user_vector(user_id)
            scores = self.bundle.scorer.user_vectors @ vector
        allowed = np.ones(len(scores), dtype=bool)
        if index is not None:
            allowed[index] = False
        top, values = _top(scores, allowed, n)
        return self.bundle.user_ids[top], values.astype(np.float32)

    # user preferences -------------------------------------------------------------------------------
    def _favorites(self, user_id, rule: FavoriteRule | None) -> tuple[np.ndarray, pd.DataFrame]:
        """(anime indices, catalogue rows with the user's rating) of the favourites, best rated first, then the
        most members; sorted on those two columns before the one gather of the catalogue's rows."""
        anime, ratings = self.ratings_of(user_id)
        keep = (rule or FavoriteRule()).mask(ratings)
        anime, ratings = anime[keep], ratings[keep]
        members = self.catalogue.frame["members"].to_numpy()[anime]
        order = pd.DataFrame({"rating": ratings, "members": members}).sort_values(
            ["rating", "members"], ascending=[False, False]).index.to_numpy()
        anime, ratings = anime[order], ratings[order]
        return anime, self.catalogue.frame.iloc[anime].assign(rating=ratings).reset_index(drop=True)

    def favorites(self, user_id, rule: FavoriteRule | None = None) -> pd.DataFrame:
        """The user's (or person's) favourite anime (see :class:`FavoriteRule`), best rated first."""
        return self._favorites(user_id, rule)[1]

    def preferences(self, user_id, rule: FavoriteRule | None = None) -> dict:
        """Favourites, and counts of their genres and (when the data has it) source material."""
        anime, favorites = self._favorites(user_id, rule)
        names = self.catalogue.genre_names
        genres = pd.Series([g for a in anime for g in names[a]], dtype=object, name="genres").value_counts()
        sources = None
        if "source" in favorites and favorites["source"].notna().any():
            sources = favorites["source"].dropna().value_counts()
        return {"favorites": favorites, "genres": genres, "sources": sources}


class EmbeddingRecommender(Recommender):
    """Recommends by the model's predicted rating of every anime the user has not rated.

    A model with a ranking head (``model.ranker.kind=ease``) or a preference head (trained with
    ``model.negatives_per_positive``) is ordered by it (what the user is likely to pick and
    enjoy), and the scores are that head's (:meth:`predicted_ratings` still gives the 1-10
    ratings); otherwise the scores are the predicted 1-10 ratings. Either way they are in
    descending order.
    """

    def predicted_ratings(self, user_id) -> np.ndarray:
        """Predicted 1-10 rating ``[num_anime]`` of every anime, for a user ID or a folded-in person."""
        if isinstance(user_id, Person):
            return self.bundle.to_rating(person_scores(self.bundle.scorer, user_id))
        index = self.bundle.user_index(int(user_id))
        return self.bundle.to_rating(self.bundle.scorer.score_users(np.array([index]))[0])

    def recommend(self, user_id, n=10, *, filter_already_rated=True, filter_items=None, filters=None,
                  min_rating: float | None = None, max_rating: float | None = None):
        n = self._check_n(n)
        predicted = self.predicted_ratings(user_id)
        allowed = self._allowed(filters, filter_items, started=self.ratings_of(user_id)[0])
        if filter_already_rated or isinstance(user_id, Person):  # a person's list is never recommended back
            allowed[self.seen(user_id)] = False
        if min_rating is not None:
            allowed &= predicted >= float(min_rating)
        if max_rating is not None:
            allowed &= predicted <= float(max_rating)
        scorer = self.bundle.scorer
        if not scorer.ranks_separately or (isinstance(user_id, Person) and scorer.ranker is None):
            return self._answer(*self._pick(predicted, allowed, n, filters), "anime", filters)
        if isinstance(user_id, Person):
            rank = person_ranking(scorer, user_id)
        else:
            rank = scorer.rank_users(np.array([self.bundle.user_index(int(user_id))]))[0]
        allowed &= np.isfinite(rank)  # the ranker's own history: rated anime, even with filter_already_rated=False
        return self._answer(*self._pick(rank, allowed, n, filters), "anime", filters)


class UserBasedRecommender(Recommender):
    """Recommends what the most similar users count among their favourites.

    Score: how many of the ``neighbours`` most similar users favour the anime; ties go to the
    higher mean rating those users gave it, then to the lower anime ID.
    """

    def __init__(self, bundle: ModelBundle, neighbours: int = 20, favorites: FavoriteRule | None = None) -> None:
        super().__init__(bundle)
        self.neighbours = int(neighbours)
        self.favorite_rule = favorites or FavoriteRule()

    def neighbour_favorites(self, user_id, similar=None) -> pd.DataFrame:
        """Per anime, sorted by ``anime_index``: how many similar users favour it, and their mean rating of it
        (``anime_index``, ``count``, ``mean_rating``). Nothing is kept on the recommender: a caller that also shows the mean
        ratings passes the table to :meth:`recommend` (``favorites=``), so one search serves both; one that
        has searched for similar users already passes them (``similar``, most similar first)."""
        if similar is None:
            similar, _ = self.similar_users(user_id, self.neighbours)
        anime, ratings = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
        for other in similar[:self.neighbours]:
            rated, values = self.rated(self.bundle.user_index(int(other)))
            keep = self.favorite_rule.mask(values)
            anime.append(rated[keep])
            ratings.append(values[keep])
        index, position, count = np.unique(np.concatenate(anime).astype(np.int64), return_inverse=True,
                                           return_counts=True)
        total = np.bincount(position, weights=np.concatenate(ratings).astype(np.float64), minlength=len(index))
        return pd.DataFrame({"anime_index": index, "count": count, "mean_rating": total / np.maximum(count, 1)})

    def recommend(self, user_id, n=10, *, filter_already_rated=True, filter_items=None, filters=None, favorites=None):
        """``favorites``: this user's :meth:`neighbour_favorites`, when the caller has it already."""
        n = self._check_n(n)
        table = self.neighbour_favorites(user_id) if favorites is None else favorites
        counts = np.zeros(len(self.bundle.anime_ids), dtype=np.float32)
        means = np.zeros(len(self.bundle.anime_ids), dtype=np.float32)
        index = table["anime_index"].to_numpy(np.int64)
        counts[index] = table["count"].to_numpy()
        means[index] = table["mean_rating"].to_numpy()
        allowed = self._allowed(filters, filter_items, started=self.ratings_of(user_id)[0]) & (counts > 0)
        if filter_already_rated or isinstance(user_id, Person):
            allowed[self.seen(user_id)] = False
        top, values = self._pick(counts, allowed, n, filters, tiebreak=means)
        return self._answer(top, values, "anime favoured by similar users", filters)


def _describe(filters: ItemFilter | None) -> str:
    """The filters that hold anime back: each field that differs from the filter that keeps everything."""
    neutral = ItemFilter.everything()
    changed = [(name, getattr(filters, name)) for name in ItemFilter.model_fields
               if filters is not None and getattr(filters, name) != getattr(neutral, name)]
    return ", ".join(f"{name} {value}" for name, value in changed) or "no filters"
