"""Answering recommendation queries against one model artifact, the same way everywhere.

The pipeline's recommender steps, the ``animerec`` command and the MLflow pyfunc server all go
through :class:`RecommendationService`, so a query gives the same rows whichever way it is
asked. A query names its ``kind`` (``similar_anime``, ``similar_users`` or ``rating_recs``), the
``query`` (a title or MAL ID for similar_anime, a user ID otherwise), ``n`` and the filters of
:class:`animerec.config.ItemFilter` (flat, or as ``filters``). In place of a user ID, ``similar_users`` and
``rating_recs`` take anyone's list: ``ratings`` (``[{"anime_id": 1, "rating": 9}, ...]``) or
``likes`` (titles), folded into the model (:mod:`animerec.foldin`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from animerec.bundle import ModelBundle, find_sorted
from animerec.config import MAX_N, ItemFilter, problems
from animerec.foldin import Person, fit_user, fold_in
from animerec.online import ListFetcher, TitleSearch
from animerec.profiles import LIKES, AnimeList, from_records, from_titles, read_list
from animerec.reasons import Reasons
from animerec.recommenders import EmbeddingRecommender, FavoriteRule, RecommenderError, UserBasedRecommender
from animerec.titles import Match, TitleIndex

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Kind:
    """One kind of query, declared once: the query's ``kind``, the CLI's sub-command and the page's tab are read
    from :data:`KINDS`. A new kind is a row here, the service's method that answers it (named as the kind), its
    layout in :func:`animerec.view.view` and its form in the page's template."""

    name: str  # the query's kind (the served model's, the JSON answer's)
    command: str  # the CLI's sub-command, the page's tab and route
    subject: Literal["anime", "person"]  # what ``query`` names: an anime, or a user (or anyone's list instead)


KINDS = {kind.name: kind for kind in (Kind("similar_anime", "similar-anime", "anime"),
                                      Kind("similar_users", "similar-users", "person"),
                                      Kind("rating_recs", "recommend", "person"))}
FILTER_FIELDS = tuple(ItemFilter.model_fields)
LIST_FIELDS = ("ratings", "likes", "mal_user", "anilist_user")  # anyone's list, in place of a user ID


MAL_URL = "https://myanimelist.net/anime/{}"


def anime_table(bundle: ModelBundle, anime_ids: np.ndarray, scores: np.ndarray, score_name: str,
                reasons: list[str] | None = None, because: list[list[dict]] | None = None) -> pd.DataFrame:
    """Rows of the catalogue for ``anime_ids``, in order, with the score column third, the anime's
    MyAnimeList page (``url``) and, when given, why each is recommended (``reason``) and the anime the
    reason cites (``because``: ``[{"anime_id", "title", "rating"}]`` per row)."""
    anime_ids = np.asarray(anime_ids, dtype=np.int64)
    known, columns = bundle.catalogue_rows
    rows, found = find_sorted(known, anime_ids)
    if not found.all():
        raise RecommenderError(f"Anime {anime_ids[~found][0]} is not in the model's catalogue.")
    table = pd.DataFrame({
        "anime_id": anime_ids,
        "title": columns["name"][rows],
        score_name: np.round(np.asarray(scores, dtype=float), 4),
        "english_title": np.array([v if isinstance(v, str) else None for v in columns["english_name"][rows]]
                                  if "english_name" in columns else [None] * len(rows), dtype=object),
        "genres": columns["genres"][rows],
        "type": columns["type"][rows],
        "episodes": np.array([None if e != e else int(e) for e in columns["episodes"][rows]], dtype=object),
        "mal_score": columns["score"][rows],
        "members": columns["members"][rows],
        "url": [MAL_URL.format(a) for a in anime_ids.tolist()],
    })
    if reasons is not None:
        table["reason"] = reasons
    if because is not None:
        table["because"] = because
    return table


class Query(BaseModel):
    """One request. ``query`` is a title or MAL ID (similar_anime) or a user ID (the other kinds).

    ``ratings`` or ``likes`` replace the user ID with anyone's list (similar_users, rating_recs).
    Blank values (None, NaN: a column other rows of a table fill) take the default; one string is
    a one-item list; ``exclude`` may be comma-separated. :meth:`from_mapping` turns pydantic's
    validation errors into one message naming the field at fault.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal[tuple(KINDS)]
    query: Any = None
    n: int = Field(10, gt=0, le=MAX_N)
    filters: ItemFilter = Field(default_factory=ItemFilter)  # given flat: the fields of ItemFilter are the query's
    min_rating: float | None = None
    max_rating: float | None = None
    ratings: Any = None  # [{anime_id, rating}, ...] or a DataFrame: anyone's list
    likes: list[str] | None = None  # titles: anyone's list
    mal_user: str | None = None  # a MyAnimeList username: their public list
    anilist_user: str | None = None  # an AniList username: their public list
    exclude: tuple[int, ...] = ()  # MAL IDs the person is not interested in: never in the answer

    @model_validator(mode="before")
    @classmethod
    def _drop_blanks(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = {k: v.item() if isinstance(v, np.generic) else v for k, v in data.items() if not _absent(v)}
        given = {name: data.pop(name) for name in FILTER_FIELDS if name in data}
        if given and "filters" in data:
            raise ValueError(f"Give the filters flat or as 'filters', not both ({', '.join(given)}).")
        nested = data.get("filters", given)
        if isinstance(nested, Mapping):
            unknown = sorted(set(nested) - set(FILTER_FIELDS))
            if unknown:
                raise ValueError(f"Unknown filter(s) {', '.join(unknown)}; the filters are {', '.join(FILTER_FIELDS)}.")
            try:
                data["filters"] = ItemFilter.model_validate(nested)
            except ValidationError as err:  # one message naming each field at fault
                raise ValueError("; ".join(problems(err, ItemFilter)) + ".") from None
        return data

    @field_validator("likes", mode="before")
    @classmethod
    def _one_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("exclude", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [p.strip() for p in value.replace(";", ",").split(",") if p.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_subject(self) -> "Query":
        given = [name for name in LIST_FIELDS if getattr(self, name) is not None]
        if given and KINDS[self.kind].subject == "anime":
            raise ValueError(f"A similar_anime query takes an anime in 'query', not {given[0]!r}.")
        if len(given) > 1 or (given and self.query is not None):
            raise ValueError(f"A {self.kind} query takes one of 'query' (a user ID), "
                             f"{', '.join(map(repr, LIST_FIELDS))}, not several.")
        if self.query is None and not given:
            what = ("an anime title or MAL ID" if KINDS[self.kind].subject == "anime"
                    else "a user ID, or for anyone's list 'ratings' ([{anime_id, rating}]), 'likes' ([titles]), "
                         "'mal_user' or 'anilist_user' (a username)")
            raise ValueError(f"A {self.kind} query needs 'query': {what}.")
        return self

    @classmethod
    def from_mapping(cls, request: Mapping[str, Any]) -> "Query":
        """Build from a JSON-like mapping, with one error that names the field at fault."""
        try:
            return cls.model_validate(dict(request))
        except ValidationError as err:
            raise RecommenderError(_first_problem(err, request)) from None

    @property
    def has_list(self) -> bool:
        return any(getattr(self, name) is not None for name in LIST_FIELDS)


QUERY_FIELDS = (*[name for name in Query.model_fields if name != "filters"], *FILTER_FIELDS)

def _first_problem(err: ValidationError, request: Mapping[str, Any]) -> str:
    errors = err.errors()
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        return f"Unknown field(s) {', '.join(unknown)}; a query has {', '.join(QUERY_FIELDS)}."
    if not errors[0]["loc"]:  # a rule across fields, or a filter's: its own message
        return str(errors[0].get("ctx", {}).get("error", errors[0]["msg"]))
    return problems(err, Query)[0] + "."


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
        """Build every lazily made table now (recommenders, titles, franchises, reasons) and compile the serving
        loops (animerec/kernels.py), so that a server's first queries are as fast as the rest."""
        _ = self.by_rating.franchises, self.by_rating.catalogue.adult, self.by_users, self.titles
        _ = self.bundle.catalogue_rows, self.by_users.catalogue.genre_names  # answers' rows, favourites' genres
        if self.bundle.taste is not None:
            _ = self.bundle.taste.by_anime  # who rated each anime: similar anime's and similar users' queries read it
            self.bundle.taste.similar_users(0)  # compiles (or reads from disk) the loop that counts co-ratings
        fit_user(self.bundle.scorer, np.zeros(1, np.int64), np.ones(1))  # and the fold-in's
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
        """Titles as fans type them: the catalogue's names, then AniList's search (answers cached, bounded)."""
        return TitleIndex(self.bundle.anime, search=TitleSearch())

    @cached_property
    def lists(self) -> ListFetcher:
        """Lists fetched by username, kept a few minutes (a filter changed, an anime marked not interesting)."""
        return ListFetcher()

    def person(self, ratings: Any = None, likes: Any = None, ratings_file: Any = None, mal_user: Any = None,
               anilist_user: Any = None):
        """Fold anyone's list into the model: ``ratings`` records, liked titles, a list file or a username."""
        if mal_user is not None or anilist_user is not None:
            anime_list = self.lists.fetch("mal" if mal_user is not None else "anilist", mal_user or anilist_user)
        elif ratings_file is not None:
            anime_list = read_list(ratings_file)
        elif isinstance(ratings, AnimeList):  # already read (the CLI's --ratings FILE)
            anime_list = ratings
        elif ratings is not None:
            anime_list = from_records(ratings, "the ratings list")
        else:
            anime_list = from_titles(list(likes), self.titles.find)
        return fold_in(self.bundle, anime_list)

    def anime_id(self, query: Any) -> int:
        """A MAL ID from an ID (a JSON number) or a title (a string, even "86": titles win over IDs)."""
        return self.anime_match(query).anime_id

    def anime_match(self, query: Any) -> Match:
        """The anime an ID or a title names, with the other anime a shared title named too."""
        if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
            return Match(int(query), "", 100.0)
        return self.titles.lookup(str(query))

    def known(self, anime_ids) -> list[int]:
        """The MAL IDs among ``anime_ids`` that the model knows (others cannot be recommended anyway)."""
        try:
            ids = np.array([int(str(a).strip()) for a in anime_ids], np.int64)
        except ValueError:
            raise RecommenderError(f"exclude must be MAL IDs (whole numbers), got {list(anime_ids)!r}.") from None
        if len(ids) == 0:
            return []
        return ids[find_sorted(self.bundle.anime_ids, ids)[1]].tolist()

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
        found, _ = rec.similar_users(user_id, max(n, self.neighbours))  # one search serves both
        users = found[:n]
        indices = [self.bundle.user_index(int(u)) for u in users]
        shared = Reasons.in_common(rec.ratings_of(user_id), [rec.rated(i) for i in indices])
        users_table = pd.concat([pd.DataFrame({"user_id": users.astype(np.int64)}), shared], axis=1)
        users_table["rating_count"] = rec.rating_counts[indices].astype(np.int64)
        prefs = rec.preferences(user_id, self.favorite_rule)
        favorites = rec.neighbour_favorites(user_id, found)  # the picks and their mean ratings
        ids, scores = rec.recommend(user_id, n, filters=filters, filter_items=self.known(exclude), favorites=favorites)
        picks = anime_table(self.bundle, ids, scores, "similar_users_favouring",
                            Reasons.neighbours(scores, self.neighbours))
        picked = np.searchsorted(favorites["anime_index"].to_numpy(), np.searchsorted(self.bundle.anime_ids, ids))
        picks.insert(3, "mean_rating", np.round(favorites["mean_rating"].to_numpy()[picked], 2))  # anime_index sorted
        return {"user_id": user_id, "users": users_table, "picks": picks, "genres": prefs["genres"],
                "sources": prefs["sources"], "favorites": prefs["favorites"]}

    def rating_recs(self, user_id: Any, n: int = 10, filters: ItemFilter | None = None,
                    min_rating: float | None = None, max_rating: float | None = None, exclude=()) -> pd.DataFrame:
        user_id = user_or_person(user_id)
        ids, scores = self.by_rating.recommend(user_id, n, filters=filters, min_rating=min_rating,
                                               max_rating=max_rating, filter_items=self.known(exclude))
        titles = isinstance(user_id, Person) and user_id.source == LIKES
        why = self.reasons.from_list(*self.by_rating.ratings_of(user_id), ids, titles=titles)
        if not self.bundle.scorer.ranks_separately:
            return anime_table(self.bundle, ids, scores, "predicted_rating", *why)
        # ordered by the ranking head; its score first, the predicted 1-10 rating beside it
        table = anime_table(self.bundle, ids, scores, "rank_score", *why)
        predicted = self.by_rating.predicted_ratings(user_id)[[self.bundle.anime_index(int(a)) for a in ids]]
        table.insert(3, "predicted_rating", np.round(predicted.astype(float), 2))
        return table

    def answer(self, query: Query | Mapping[str, Any]) -> dict:
        """A JSON-ready answer: ``{"kind", "query", "anime": [rows]}`` (+ ``users`` and ``genres`` for similar_users)."""
        if not isinstance(query, Query):
            query = Query.from_mapping(query)
        if KINDS[query.kind].subject == "anime":
            match = self.anime_match(query.query)
            anime_id, table = self.similar_anime(match.anime_id, query.n, query.filters, query.exclude)
            title = self.bundle.anime.loc[self.bundle.anime["anime_id"] == anime_id, "name"]
            asked = {"anime_id": anime_id, "title": title.iloc[0] if len(title) else None, "also_matched": match.others}
            return {"kind": query.kind, "query": asked, "anime": records(table)}
        user = (self.person(query.ratings, query.likes, mal_user=query.mal_user, anilist_user=query.anilist_user)
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
    return frame.astype(object).where(frame.notna(), None).to_dict("records")
