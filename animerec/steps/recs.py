"""The three recommender steps: similar_anime, similar_users and rating_recs.

Each reads the ``model`` artifact (which carries the catalogue, encoders and ratings), answers
one query through :mod:`animerec.recommenders`, prints a readable table, and stores a CSV as an
artifact of the step's own name (W&B type ``recommendations``) and as a W&B / MLflow table.
A bad query fails before anything is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.bundle import ModelBundle
from animerec.errors import ConfigError
from animerec.recommenders import (EmbeddingRecommender, ItemFilter, RecommenderError, UserBasedRecommender,
                                   find_anime)
from animerec.steps.common import step_run, store_from

logger = logging.getLogger(__name__)

ANIME_COLUMNS = ["anime_id", "title", "genres", "type", "episodes", "mal_score", "members"]


def model_ref(cfg: dict) -> str:
    return cfg["model"].get("pretrained") or "model:latest"


def anime_table(bundle: ModelBundle, anime_ids: np.ndarray, scores: np.ndarray, score_name: str) -> pd.DataFrame:
    """Rows of the catalogue for ``anime_ids``, in order, with the score column second."""
    catalogue = bundle.anime.set_index("anime_id")
    rows = catalogue.loc[anime_ids]
    table = pd.DataFrame({
        "anime_id": anime_ids,
        "title": rows["name"].to_numpy(),
        score_name: np.round(scores.astype(float), 4),
        "genres": rows["genres"].to_numpy(),
        "type": rows["type"].to_numpy(),
        "episodes": rows["episodes"].to_numpy(),
        "mal_score": rows["score"].to_numpy(),
        "members": rows["members"].to_numpy(),
    })
    return table


def show(title: str, table: pd.DataFrame) -> None:
    with pd.option_context("display.max_colwidth", 40, "display.width", 160):
        print(f"\n{title}\n{table.to_string(index=False)}\n", flush=True)


def pick_random_anime(bundle: ModelBundle, seed: int) -> int:
    rated = bundle.anime[bundle.anime["anime_index"] >= 0]
    return int(rated["anime_id"].sample(1, random_state=seed).iloc[0])


def pick_random_user(rec, recs: dict) -> int:
    lo, hi = int(recs["user_min_ratings"]), int(recs["user_max_ratings"])
    eligible = np.flatnonzero((rec.rating_counts >= lo) & (rec.rating_counts <= hi))
    if len(eligible) == 0:
        raise RecommenderError(
            f"No user has between recs.user_min_ratings={lo} and recs.user_max_ratings={hi} ratings; widen the range."
        )
    return int(rec.bundle.user_ids[np.random.default_rng(int(recs["seed"])).choice(eligible)])


def similar_anime(cfg: dict) -> dict:
    recs = cfg["recs"]
    filters = ItemFilter.from_config(recs)
    with step_run("similar_anime", cfg, ("recs", "model")) as run:
        bundle = ModelBundle.load(run.use(model_ref(cfg)).path)
        if recs.get("anime_id") is not None:
            anime_id = int(recs["anime_id"])
        elif recs.get("anime"):
            anime_id = find_anime(bundle, recs["anime"])
        else:
            if not recs.get("random"):
                logger.info("No recs.anime / recs.anime_id given: picking a random anime (recs.seed=%s)", recs["seed"])
            anime_id = pick_random_anime(bundle, int(recs["seed"]))
        rec = EmbeddingRecommender(bundle)
        ids, scores = rec.similar_items(anime_id, int(recs["n"]), filters=filters)
        query = bundle.anime.loc[bundle.anime["anime_id"] == anime_id].iloc[0]
        table = anime_table(bundle, ids, scores, "similarity")
        show(f"Anime similar to {query['name']} (MAL {anime_id}; {query['genres']}; {query['type']})", table)
        with run.output("similar_anime", "recommendations", metadata={"anime_id": anime_id}) as out:
            table.to_csv(out.path / "similar_anime.csv", index=False)
            (out.path / "query.json").write_text(json.dumps({"anime_id": anime_id, "title": query["name"]}))
        run.log_table("similar_anime", table)
        return {"similar_anime": out.version.ref, "anime_id": anime_id, "table": table}


def bar_chart(counts: pd.Series, title: str, path: Path) -> None:
    from animerec.plots import figure

    top = counts.head(15)[::-1]
    with figure(path, figsize=(7, 0.35 * len(top) + 1.2)) as (_fig, ax):
        ax.barh(top.index.astype(str), top.to_numpy(), color="#2e6fba")
        ax.set_title(title)
        ax.set_xlabel("favourite anime")


def similar_users(cfg: dict) -> dict:
    recs = cfg["recs"]
    filters = ItemFilter.from_config(recs)
    with step_run("similar_users", cfg, ("recs", "model")) as run:
        bundle = ModelBundle.load(run.use(model_ref(cfg)).path)
        rec = UserBasedRecommender(bundle, favorite_percentile=float(recs["favorite_percentile"]))
        user_id = int(recs["user_id"]) if recs.get("user_id") is not None else pick_random_user(rec, recs)
        users, similarity = rec.similar_users(user_id, int(recs["n"]))
        counts = rec.rating_counts[[bundle.user_index(int(u)) for u in users]]
        users_table = pd.DataFrame({"user_id": users, "similarity": np.round(similarity, 4), "rating_count": counts})
        prefs = rec.preferences(user_id, float(recs["favorite_percentile"]))
        ids, scores = rec.recommend(user_id, int(recs["n"]), filters=filters)
        picks = anime_table(bundle, ids, scores, "similar_users_favouring")
        means = rec.neighbour_favorites(user_id).set_index("anime_index")["mean_rating"]
        picks.insert(3, "mean_rating", np.round(means.loc[[bundle.anime_index(int(a)) for a in ids]].to_numpy(), 2))
        show(f"Users most similar to user {user_id}", users_table)
        show(f"User {user_id}'s favourite genres (favourites: rated >= their {recs['favorite_percentile']}th percentile)",
             prefs["genres"].head(10).rename_axis("genre").reset_index(name="favourites"))
        show(f"Anime that users similar to {user_id} love and {user_id} has not rated", picks)
        with run.output("similar_users", "recommendations", metadata={"user_id": user_id}) as out:
            users_table.to_csv(out.path / "similar_users.csv", index=False)
            picks.to_csv(out.path / "user_based_recs.csv", index=False)
            favs = prefs["favorites"].rename(columns={"name": "title", "score": "mal_score"})
            favs.to_csv(out.path / "favorites.csv", index=False)
            prefs["genres"].rename_axis("genre").reset_index(name="favourites").to_csv(out.path / "genres.csv", index=False)
            bar_chart(prefs["genres"], f"User {user_id}: genres of favourite anime", out.path / "genres.png")
            if prefs["sources"] is not None:
                prefs["sources"].rename_axis("source").reset_index(name="favourites").to_csv(out.path / "sources.csv", index=False)
                bar_chart(prefs["sources"], f"User {user_id}: source material of favourite anime", out.path / "sources.png")
            (out.path / "query.json").write_text(json.dumps({"user_id": user_id}))
        run.log_table("similar_users", users_table)
        run.log_table("user_based_recs", picks)
        run.log_image("favourite_genres", out.version.path / "genres.png")
        if prefs["sources"] is not None:
            run.log_image("favourite_sources", out.version.path / "sources.png")
        return {"similar_users": out.version.ref, "user_id": user_id, "table": users_table, "picks": picks}


def rating_user(cfg: dict, rec) -> int:
    recs = cfg["recs"]
    mode = recs.get("rating_user", "similar_users")
    if mode == "given" or (recs.get("user_id") is not None and mode != "random"):
        if recs.get("user_id") is None:
            raise ConfigError("recs.rating_user=given needs recs.user_id.")
        return int(recs["user_id"])
    if mode == "random":
        return pick_random_user(rec, recs)
    if mode == "similar_users":
        store = store_from(cfg)
        if not store.versions("similar_users"):
            logger.info("No similar_users result yet: picking a random user")
            return pick_random_user(rec, recs)
        return int(json.loads(store.resolve("similar_users:latest").file("query.json").read_text())["user_id"])
    raise ConfigError(f"recs.rating_user must be similar_users, given or random; got {mode!r}.")


def rating_recs(cfg: dict) -> dict:
    recs = cfg["recs"]
    filters = ItemFilter.from_config(recs)
    with step_run("rating_recs", cfg, ("recs", "model")) as run:
        bundle = ModelBundle.load(run.use(model_ref(cfg)).path)
        rec = EmbeddingRecommender(bundle)
        user_id = rating_user(cfg, rec)
        ids, scores = rec.recommend(user_id, int(recs["n"]), filters=filters,
                                    min_rating=recs.get("min_predicted_rating"), max_rating=recs.get("max_predicted_rating"))
        table = anime_table(bundle, ids, scores, "predicted_rating")
        show(f"Highest predicted ratings for user {user_id} (anime they have not rated)", table)
        with run.output("rating_recs", "recommendations", metadata={"user_id": user_id}) as out:
            table.to_csv(out.path / "rating_recs.csv", index=False)
            (out.path / "query.json").write_text(json.dumps({"user_id": user_id}))
        run.log_table("rating_recs", table)
        return {"rating_recs": out.version.ref, "user_id": user_id, "table": table}
