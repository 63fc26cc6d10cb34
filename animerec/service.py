"""Answering recommendation queries against one model artifact, the same way everywhere.

The pipeline's recommender steps, the ``animerec`` command and the MLflow pyfunc server all go
through :class:`RecommendationService`, so a query gives the same rows whichever way it is
asked. A query names its ``kind`` (``similar_anime``, ``similar_users`` or ``rating_recs``), the
``query`` (a title or MAL ID for similar_anime, a user ID otherwise), ``n`` and the filters of
:class:`animerec.recommenders.ItemFilter`. In place of a user ID, ``similar_users`` and
``rating_recs`` take anyone's list: ``ratings`` (``[{"anime_id": 1, "rating": 9}, ...]``) or
``likes`` (titles), folded into the model (:mod:`animerec.foldin`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

import numpy as np
import pandas as pd

from animerec.bundle import ModelBundle
from animerec.reasons import Reasons
from animerec.recommenders import (EmbeddingRecommender, FavoriteRule, ItemFilter, RecommenderError,
                                   UserBasedRecommender)

logger = logging.getLogger(__name__)

KINDS = ("similar_anime", "similar_users", "rating_recs")
FILTER_FIELDS = ("genres", "genre_match", "types", "min_score", "max_score", "sequels", "adult", "min_members",
                 "popularity_damping")
DEFAULT_SEQUELS = "hide_unstarted"  # what a query that does not say gets: no later seasons of unstarted shows
LIST_FIELDS = ("ratings", "likes")  # anyone's list, in place of a user ID
QUERY_FIELDS = ("kind", "query", "n", *FILTER_FIELDS, "min_rating", "max_rating", *LIST_FIELDS, "exclude",
                "dropped_as_dislikes")


MAL_URL = "https://myanimelist.net/anime/{}"


def anime_table(bundle: ModelBundle, anime_ids: np.ndarray, scores: np.ndarray, score_name: str,
                reasons: list[str] | None = None) -> pd.DataFrame:
    """Rows of the catalogue for ``anime_ids``, in order, with the score column third, the anime's
    MyAnimeList page (``url``) and, when given, why each is recommended (``reason``)."""
    rows = bundle.anime.set_index("anime_id").loc[anime_ids]
    table = pd.DataFrame({
        "anime_id": np.asarray(anime_ids, dtype=np.int64),
        "title": rows["name"].to_numpy(),
        score_name: np.round(np.asarray(scores, dtype=float), 4),
        "genres": rows["genres"].to_numpy(),
        "type": rows["type"].to_numpy(),
        "episodes": np.array([None if e != e else int(e) for e in rows["episodes"].to_numpy(float)], dtype=object),
        "mal_score": rows["score"].to_numpy(),
        "members": rows["members"].to_numpy(),
        "url": [MAL_URL.format(int(a)) for a in anime_ids],
    })
    if reasons is not None:
        table["reason"] = reasons
    return table


@dataclass
class Query:
    """One request. ``query`` is a title or MAL ID (similar_anime) or a user ID (the other kinds).

    ``ratings`` or ``likes`` replace the user ID with anyone's list (similar_users, rating_recs).
    """

    kind: str
    query: Any
    n: int = 10
    filters: ItemFilter = field(default_factory=ItemFilter)
    min_rating: float | None = None
    max_rating: float | None = None
    ratings: Any = None
    likes: Any = None
    exclude: tuple[int, ...] = ()  # MAL IDs the person is not interested in: never in the answer
    dropped_as_dislikes: bool = True  # a list's dropped anime are dislikes (animerec.foldin.fold_in)

    @classmethod
    def from_mapping(cls, request: Mapping[str, Any]) -> "Query":
        """Build from a JSON-like mapping, with errors that name the field at fault."""
        unknown = sorted(set(request) - set(QUERY_FIELDS))
        if unknown:
            raise RecommenderError(f"Unknown field(s) {', '.join(unknown)}; a query has {', '.join(QUERY_FIELDS)}.")
        kind = request.get("kind")
        if kind not in KINDS:
            raise RecommenderError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
        given = [name for name in LIST_FIELDS if not _absent(request.get(name))]
        if given and kind == "similar_anime":
            raise RecommenderError(f"A similar_anime query takes an anime in 'query', not {given[0]!r}.")
        if len(given) > 1 or (given and not is_missing(request.get("query"))):
            raise RecommenderError(f"A {kind} query takes one of 'query' (a user ID), 'ratings' or 'likes', not "
                                   f"several.")
        if is_missing(request.get("query")) and not given:
            what = ("an anime title or MAL ID" if kind == "similar_anime"
                    else "a user ID, or 'ratings' ([{anime_id, rating}]) or 'likes' ([titles]) for anyone's list")
            raise RecommenderError(f"A {kind} query needs 'query': {what}.")
        n = request.get("n", 10)
        n = 10 if is_missing(n) else n
        try:
            n = int(n)
        except (TypeError, ValueError):
            raise RecommenderError(f"n must be a positive integer, got {n!r}.") from None

        def as_list(name):
            value = request.get(name)
            if is_missing(value):
                return []
            return [value] if isinstance(value, str) else list(value)

        def as_float(name):
            value = request.get(name)
            if is_missing(value):
                return None
            try:
                return float(value)
            except (TypeError, ValueError):
                raise RecommenderError(f"{name} must be a number, got {value!r}.") from None

        def as_bool(name, default: bool) -> bool:
            value = request.get(name)
            if is_missing(value):
                return default
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise RecommenderError(f"{name} must be true or false, got {value!r}.")

        genre_match, sequels = request.get("genre_match"), request.get("sequels")
        min_members, damping = as_float("min_members"), as_float("popularity_damping")
        if min_members is not None and (min_members < 0 or min_members != int(min_members)):
            raise RecommenderError(f"min_members must be a whole number >= 0, got {request.get('min_members')!r}.")
        filters = ItemFilter(genres=as_list("genres"), genre_match="any" if is_missing(genre_match) else genre_match,
                             types=as_list("types"), min_score=as_float("min_score"), max_score=as_float("max_score"),
                             sequels=DEFAULT_SEQUELS if is_missing(sequels) else str(sequels),
                             adult=as_bool("adult", False), popularity_damping=damping or 0.0,
                             min_members=None if min_members is None else int(min_members))
        likes = request.get("likes")
        if isinstance(likes, str):
            likes = [likes]
        exclude = request.get("exclude")
        if isinstance(exclude, str):
            exclude = [part for part in exclude.replace(";", ",").split(",") if part.strip()]
        try:
            exclude = () if _absent(exclude) else tuple(int(str(a).strip()) for a in exclude)
        except (TypeError, ValueError):
            raise RecommenderError(f"exclude must be MAL IDs (a list, or comma-separated), got {exclude!r}.") from None
        return cls(kind, request.get("query"), n, filters, as_float("min_rating"), as_float("max_rating"),
                   None if _absent(request.get("ratings")) else request.get("ratings"),
                   None if _absent(likes) else list(likes), exclude, as_bool("dropped_as_dislikes", True))

    @property
    def has_list(self) -> bool:
        return self.ratings is not None or self.likes is not None


def _absent(value: Any) -> bool:
    """Missing, or an empty list (a table column other rows fill)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    return is_missing(value)


def is_missing(value: Any) -> bool:
    """None, NaN (a column absent from a row of a table) or a blank string."""
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def user_or_person(value: Any):
    from animerec.foldin import Person

    return value if isinstance(value, Person) else user_id_of(value)


def user_id_of(value: Any) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise RecommenderError(f"A user ID must be an integer, got {value!r}.") from None


class RecommendationService:
    """The three recommenders over one :class:`ModelBundle`, answering :class:`Query` objects."""

    def __init__(self, bundle: ModelBundle, favorites: FavoriteRule | None = None, neighbours: int = 20) -> None:
        self.bundle = bundle
        self.favorite_rule = favorites or FavoriteRule()
        self.neighbours = int(neighbours)

    @classmethod
    def from_path(cls, path, **kwargs) -> "RecommendationService":
        return cls(ModelBundle.load(path), **kwargs)

    @cached_property
    def by_rating(self) -> EmbeddingRecommender:
        return EmbeddingRecommender(self.bundle)

    def warm(self) -> None:
        """Build every lazily made table now (recommenders, titles, franchises, reasons), so that a server's
        first queries are as fast as the rest."""
        _ = self.by_rating.franchises, self.by_rating.catalogue.adult, self.by_users, self.titles
        self.reasons.warm()

    @cached_property
    def reasons(self) -> Reasons:
        return Reasons(self.bundle)

    @cached_property
    def by_users(self) -> UserBasedRecommender:
        return UserBasedRecommender(self.bundle, self.neighbours, self.favorite_rule)

    # queries -------------------------------------------------------------------------------------
    @cached_property
    def titles(self):
        from animerec.titles import TitleIndex

        return TitleIndex(self.bundle.anime)

    def person(self, ratings: Any = None, likes: Any = None, ratings_file: Any = None,
               dropped_as_dislikes: bool = True):
        """Fold anyone's list into the model: ``ratings`` records, liked titles or a list file (its dropped
        anime as dislikes unless ``dropped_as_dislikes`` is false)."""
        from animerec.foldin import fold_in
        from animerec.profiles import AnimeList, from_records, from_titles, read_list

        if ratings_file is not None:
            anime_list = read_list(ratings_file)
        elif isinstance(ratings, AnimeList):  # already read (the CLI's --ratings FILE)
            anime_list = ratings
        elif ratings is not None:
            anime_list = from_records(ratings, "the ratings list")
        else:
            anime_list = from_titles(list(likes), self.titles.find)
        return fold_in(self.bundle, anime_list, dropped_as_dislikes)

    def anime_id(self, query: Any) -> int:
        """A MAL ID from an ID (a JSON number) or a title (a string, even "86": titles win over IDs)."""
        if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
            return int(query)
        return self.titles.find(str(query))

    def known(self, anime_ids) -> list[int]:
        """The MAL IDs among ``anime_ids`` that the model knows (others cannot be recommended anyway)."""
        try:
            ids = np.array([int(str(a).strip()) for a in anime_ids], np.int64)
        except ValueError:
            raise RecommenderError(f"exclude must be MAL IDs (whole numbers), got {list(anime_ids)!r}.") from None
        if len(ids) == 0:
            return []
        position = np.minimum(np.searchsorted(self.bundle.anime_ids, ids), len(self.bundle.anime_ids) - 1)
        return ids[self.bundle.anime_ids[position] == ids].tolist()

    def similar_anime(self, query: Any, n: int = 10, filters: ItemFilter | None = None,
                      exclude=()) -> tuple[int, pd.DataFrame]:
        anime_id = self.anime_id(query)
        ids, scores = self.by_rating.similar_items(anime_id, n, filters=filters, filter_items=self.known(exclude))
        return anime_id, anime_table(self.bundle, ids, scores, "similarity", self.reasons.similar(anime_id, ids))

    def similar_users(self, user_id: Any, n: int = 10, filters: ItemFilter | None = None, exclude=()) -> dict:
        """Similar users, the user's favourite genres / sources, and what similar users love.

        ``user_id`` is a user ID or a folded-in :class:`~animerec.foldin.Person`.
        """
        user_id = user_or_person(user_id)
        rec = self.by_users
        users, similarity = rec.similar_users(user_id, n)
        counts = rec.rating_counts[[self.bundle.user_index(int(u)) for u in users]]
        users_table = pd.DataFrame({"user_id": users.astype(np.int64), "similarity": np.round(similarity, 4),
                                    "rating_count": counts.astype(np.int64)})
        prefs = rec.preferences(user_id, self.favorite_rule)
        ids, scores = rec.recommend(user_id, n, filters=filters, filter_items=self.known(exclude))
        picks = anime_table(self.bundle, ids, scores, "similar_users_favouring",
                            Reasons.neighbours(scores, self.neighbours))
        means = rec.neighbour_favorites(user_id).set_index("anime_index")["mean_rating"]
        picks.insert(3, "mean_rating", np.round(means.loc[[self.bundle.anime_index(int(a)) for a in ids]].to_numpy(), 2))
        return {"user_id": user_id, "users": users_table, "picks": picks, "genres": prefs["genres"],
                "sources": prefs["sources"], "favorites": prefs["favorites"]}

    def rating_recs(self, user_id: Any, n: int = 10, filters: ItemFilter | None = None,
                    min_rating: float | None = None, max_rating: float | None = None, exclude=()) -> pd.DataFrame:
        user_id = user_or_person(user_id)
        ids, scores = self.by_rating.recommend(user_id, n, filters=filters, min_rating=min_rating,
                                               max_rating=max_rating, filter_items=self.known(exclude))
        why = self.reasons.from_list(*self.by_rating.ratings_of(user_id), ids, getattr(user_id, "weights", None))
        if not self.bundle.scorer.ranks_separately:
            return anime_table(self.bundle, ids, scores, "predicted_rating", why)
        # ordered by the ranking head; its score first, the predicted 1-10 rating beside it
        table = anime_table(self.bundle, ids, scores, "rank_score", why)
        predicted = self.by_rating.predicted_ratings(user_id)[[self.bundle.anime_index(int(a)) for a in ids]]
        table.insert(3, "predicted_rating", np.round(predicted.astype(float), 2))
        return table

    def answer(self, query: Query | Mapping[str, Any]) -> dict:
        """A JSON-ready answer: ``{"kind", "query", "anime": [rows]}`` (+ ``users`` and ``genres`` for similar_users)."""
        if not isinstance(query, Query):
            query = Query.from_mapping(query)
        if query.kind == "similar_anime":
            anime_id, table = self.similar_anime(query.query, query.n, query.filters, query.exclude)
            title = self.bundle.anime.loc[self.bundle.anime["anime_id"] == anime_id, "name"]
            return {"kind": query.kind, "query": {"anime_id": anime_id, "title": title.iloc[0] if len(title) else None},
                    "anime": records(table)}
        user = (self.person(query.ratings, query.likes, dropped_as_dislikes=query.dropped_as_dislikes)
                if query.has_list else user_id_of(query.query))
        asked = {"list": user.summary()} if query.has_list else {"user_id": user}
        if query.kind == "similar_users":
            result = self.similar_users(user, query.n, query.filters, query.exclude)
            return {"kind": query.kind, "query": asked, "users": records(result["users"]),
                    "genres": {str(k): int(v) for k, v in result["genres"].head(10).items()},
                    "anime": records(result["picks"])}
        table = self.rating_recs(user, query.n, query.filters, query.min_rating, query.max_rating, query.exclude)
        return {"kind": query.kind, "query": asked, "anime": records(table)}


def records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as plain-Python dicts (JSON-serialisable; NaN becomes None)."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and np.isnan(value):
                value = None
            clean[key] = value
        out.append(clean)
    return out
