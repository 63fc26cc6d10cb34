"""The three recommender steps: similar_anime, similar_users and rating_recs.

Each reads the ``model`` artifact (which carries the catalogue, encoders and ratings), answers
one query through :mod:`animerec.recommenders`, prints a readable table, and stores a CSV as an
artifact of the step's own name (W&B type ``recommendations``) and as a W&B / MLflow table.
A bad query fails before anything is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.bundle import ModelBundle
from animerec.config import Config
from animerec.errors import ConfigError
from animerec.plots import figure
from animerec.recommenders import FavoriteRule, RecommenderError
from animerec.service import RecommendationService
from animerec.steps.common import pinned, step_run, store_from
from animerec.view import fitted

logger = logging.getLogger(__name__)

def model_ref(cfg: Config) -> str:
    """The pipeline's pinned model (``inputs.model``), else ``model.pretrained``, else ``model:latest``."""
    return cfg.inputs.model or cfg.model.pretrained or "model:latest"


def load_service(run, cfg: dict) -> RecommendationService:
    """The model named by ``model.pretrained`` (local or W&B), else ``model:latest``, as a service."""
    bundle = ModelBundle.load(run.use_model(model_ref(cfg)).path)
    return RecommendationService(bundle, favorites=FavoriteRule.from_config(cfg.recs))


def show(title: str, table: pd.DataFrame) -> None:
    """A result as the CLI prints it, fitted to the terminal (the whole table is the step's artifact)."""
    text = table.to_string(index=False) if "title" not in table and "user_id" not in table else fitted(
        table, shutil.get_terminal_size((100, 24)).columns)
    print(f"\n{title}\n{text}\n", flush=True)


def pick_random_anime(bundle: ModelBundle, seed: int) -> int:
    """A random anime with an embedding, drawn in proportion to its MAL members (well-known ones first)."""
    rated = bundle.anime[bundle.anime["anime_index"] >= 0]
    weights = rated["members"].fillna(0).clip(lower=1).to_numpy(float)
    return int(rated["anime_id"].sample(1, random_state=seed, weights=weights).iloc[0])


def pick_random_user(rec, recs: dict) -> int:
    lo, hi = int(recs.user_min_ratings), int(recs.user_max_ratings)
    eligible = np.flatnonzero((rec.rating_counts >= lo) & (rec.rating_counts <= hi))
    if len(eligible) == 0:
        raise RecommenderError(
            f"No user has between recs.user_min_ratings={lo} and recs.user_max_ratings={hi} ratings; widen the range."
        )
    return int(rec.bundle.user_ids[np.random.default_rng(int(recs.seed)).choice(eligible)])


def similar_anime(cfg: Config) -> dict:
    recs = cfg.recs
    filters = recs.of()
    with step_run("similar_anime", cfg) as run:
        service = load_service(run, cfg)
        bundle = service.bundle
        if recs.anime_id is not None:
            query = int(recs.anime_id)
        elif recs.anime:
            query = str(recs.anime)
        else:
            if not recs.random:
                logger.info("No recs.anime / recs.anime_id given: picking a random anime (recs.seed=%s)", recs.seed)
            query = pick_random_anime(bundle, int(recs.seed))
        anime_id, table = service.similar_anime(query, int(recs.n), filters, recs.exclude)
        row = bundle.anime.loc[bundle.anime["anime_id"] == anime_id].iloc[0]
        show(f"Anime similar to {row['name']} (MAL {anime_id}; {row['genres']}; {row['type']})", table)
        with run.output("similar_anime", "recommendations", metadata={"anime_id": anime_id}) as out:
            table.to_csv(out.path / "similar_anime.csv", index=False)
            (out.path / "query.json").write_text(json.dumps({"anime_id": anime_id, "title": row["name"]}))
        run.log_table("similar_anime", table)
        return {"similar_anime": out.version.ref, "anime_id": anime_id, "table": table}


def bar_chart(counts: pd.Series, title: str, path: Path) -> None:
    top = counts.head(15)[::-1]
    with figure(path, figsize=(7, 0.35 * len(top) + 1.2)) as (_fig, ax):
        ax.barh(top.index.astype(str), top.to_numpy(), color="#2e6fba")
        ax.set_title(title)
        ax.set_xlabel("favourite anime")


def similar_users(cfg: Config) -> dict:
    recs = cfg.recs
    filters = recs.of()
    with step_run("similar_users", cfg) as run:
        service = load_service(run, cfg)
        user, query, who = step_user(service, recs)
        if user is None:
            user = pick_random_user(service.by_users, recs)
            query, who = {"user_id": user}, f"user {user}"
        result = service.similar_users(user, int(recs.n), filters, recs.exclude)
        users_table, picks, genres, sources = result["users"], result["picks"], result["genres"], result["sources"]
        show(f"Training users most similar to {who}", users_table)
        show(f"Favourite genres of {who} (favourites: the top {recs.favorite_fraction:.0%} by rating, "
             f"rated >= {recs.favorite_min_rating:g})",
             genres.head(10).rename_axis("genre").reset_index(name="favourites"))
        show(f"Anime that users similar to {who} love, {unseen_by(who)}", picks)
        with run.output("similar_users", "recommendations", metadata=query_metadata(query)) as out:
            users_table.to_csv(out.path / "similar_users.csv", index=False)
            picks.to_csv(out.path / "user_based_recs.csv", index=False)
            favs = result["favorites"].rename(columns={"name": "title", "score": "mal_score"})
            favs.to_csv(out.path / "favorites.csv", index=False)
            genres.rename_axis("genre").reset_index(name="favourites").to_csv(out.path / "genres.csv", index=False)
            bar_chart(genres, f"{who[:1].upper()}{who[1:]}: genres of favourite anime", out.path / "genres.png")
            if sources is not None:
                sources.rename_axis("source").reset_index(name="favourites").to_csv(out.path / "sources.csv", index=False)
                bar_chart(sources, f"{who[:1].upper()}{who[1:]}: source material of favourite anime",
                          out.path / "sources.png")
            (out.path / "query.json").write_text(json.dumps(query))
        run.log_table("similar_users", users_table)
        run.log_table("user_based_recs", picks)
        run.log_image("favourite_genres", out.version.path / "genres.png")
        if sources is not None:
            run.log_image("favourite_sources", out.version.path / "sources.png")
        return {"similar_users": out.version.ref, **query, "table": users_table, "picks": picks}


def step_user(service, recs: dict):
    """``(user, query, who)`` for recs.ratings_file, recs.mal_user or recs.anilist_user (a folded-in person) or
    recs.user_id; Nones for none of them."""
    for key in ("ratings_file", "mal_user", "anilist_user"):
        if getattr(recs, key):
            person = service.person(**{key: getattr(recs, key)})
            return person, {key: getattr(recs, key), "list": person.summary()}, f"the list in recs.{key}"
    if recs.user_id is not None:
        return int(recs.user_id), {"user_id": int(recs.user_id)}, f"user {int(recs.user_id)}"
    return None, None, None


def unseen_by(who: str) -> str:
    return "not on the list" if who.startswith("the list") else f"not rated by {who}"


def query_metadata(query: dict) -> dict:
    return {"user_id": query["user_id"]} if "user_id" in query else {k: v for k, v in query.items() if k != "list"} | {
        **query["list"]}


def rating_user(cfg: Config, rec, run) -> int:
    recs = cfg.recs
    mode = recs.rating_user
    if mode == "given" or (recs.user_id is not None and mode != "random"):
        if recs.user_id is None:
            raise ConfigError("recs.rating_user=given needs recs.user_id.")
        return int(recs.user_id)
    if mode == "random":
        return pick_random_user(rec, recs)
    # recs.rating_user=similar_users: the user the last similar_users run was asked about
    if cfg.inputs.similar_users is None and not store_from(cfg).versions("similar_users"):
        logger.info("No similar_users result yet: picking a random user")
        return pick_random_user(rec, recs)
    query = json.loads(run.use(pinned(cfg, "similar_users")).file("query.json").read_text())
    if "user_id" not in query:
        logger.info("The last similar_users run was for a list (recs.ratings_file), not a user: picking a random "
                    "user; set recs.ratings_file here too for that list")
        return pick_random_user(rec, recs)
    return int(query["user_id"])


def rating_recs(cfg: Config) -> dict:
    recs = cfg.recs
    filters = recs.of()
    with step_run("rating_recs", cfg) as run:
        service = load_service(run, cfg)
        if recs.ratings_file or recs.mal_user or recs.anilist_user:
            user, query, who = step_user(service, recs)
        else:
            user = rating_user(cfg, service.by_rating, run)
            query, who = {"user_id": user}, f"user {user}"
        table = service.rating_recs(user, int(recs.n), filters, recs.min_predicted_rating,
                                    recs.max_predicted_rating, recs.exclude).drop(columns="because")  # in "reason"
        show(f"Recommended for {who}, {unseen_by(who)}", table)
        with run.output("rating_recs", "recommendations", metadata=query_metadata(query)) as out:
            table.to_csv(out.path / "rating_recs.csv", index=False)
            (out.path / "query.json").write_text(json.dumps(query))
        run.log_table("rating_recs", table)
        return {"rating_recs": out.version.ref, **query, "table": table}
