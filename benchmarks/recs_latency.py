"""Latency of one query of each recommender at full MAL size, once warm.

Seed-style: 17.5k anime and 300k users with 128-wide random embeddings and ~60 ratings per user;
prints `<query> median_ms=<x> p99_ms=<y>` for similar_anime, similar_users and rating_recs.

model=best (``--best FOLDER``, a model artifact trained at full size, e.g. by
``benchmarks/full_scale.py --stages data best_to_stop``, whose model lands in
``/tmp/animerec-full-scale/artifacts/model/v1``): the answers the page and the served model give
(the taste index, the ranking head, similar users, and a 1,000-entry list folded in), printing
`best_<query> median_ms=<x> p99_ms=<y>`.

    python benchmarks/recs_latency.py [--users 300000] [--repeats 200] [--best FOLDER] [--skip-seed]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.bundle import ModelBundle, write_bundle
from animerec.data import demo
from animerec.data.layouts import load_anime
from animerec.recommenders import EmbeddingRecommender


def build(folder: Path, num_users: int, dim: int, per_user: int) -> ModelBundle:
    rng = np.random.default_rng(0)
    anime = load_anime(demo.catalogue_path())
    anime["anime_index"] = np.arange(len(anime))
    n = num_users * per_user
    ratings = pd.DataFrame({"user_index": np.repeat(np.arange(num_users), per_user),
                            "anime_index": rng.integers(0, len(anime), n), "rating": rng.integers(1, 11, n)})
    write_bundle(folder, scorer_arrays={"kernel": np.array([[3.0]]), "bias": np.array([0.1])},
                 user_emb=rng.normal(size=(num_users, dim)).astype(np.float32),
                 anime_emb=rng.normal(size=(len(anime), dim)).astype(np.float32), activation="sigmoid",
                 user_ids=np.arange(num_users) * 3, anime_ids=anime["anime_id"].to_numpy(),
                 scale={"min": 1.0, "max": 10.0}, anime=anime, ratings=ratings)
    return ModelBundle.load(folder)


def timed(fn, queries) -> np.ndarray:
    for q in queries[:5]:
        fn(q)  # warm
    out = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - start) * 1000)
    return np.array(out)


def time_best(folder: Path, repeats: int) -> None:
    from animerec.pyfunc import AnimeRecPyfunc
    from animerec.service import RecommendationService

    start = time.perf_counter()
    service = RecommendationService.from_path(folder)
    print(f"best_load seconds={time.perf_counter() - start:.1f}", flush=True)
    bundle, rng = service.bundle, np.random.default_rng(2)
    served = AnimeRecPyfunc()
    served.service = service
    anime = rng.choice(bundle.anime_ids, repeats)
    users = rng.choice(bundle.user_ids, repeats)
    lists = [[{"anime_id": int(a), "rating": int(r)} for a, r in
              zip(rng.choice(bundle.anime_ids, 1000, replace=False), rng.integers(1, 11, 1000))]
             for _ in range(max(repeats // 10, 10))]
    for name, fn, queries in (
        ("similar_anime", lambda q: service.answer({"kind": "similar_anime", "query": int(q)}), anime),
        ("similar_users", lambda q: service.answer({"kind": "similar_users", "query": int(q)}), users),
        ("rating_recs", lambda q: service.answer({"kind": "rating_recs", "query": int(q)}), users),
        ("foldin_1000", lambda q: service.answer({"kind": "rating_recs", "ratings": q}), lists),
        ("served_foldin_1000", lambda q: served.predict(None, pd.DataFrame([{"kind": "rating_recs", "ratings": q}])),
         lists),  # the MLflow model's own path (a one-row table), without HTTP
    ):
        ms = timed(fn, queries)
        print(f"best_{name} median_ms={np.median(ms):.2f} p99_ms={np.percentile(ms, 99):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ratings-per-user", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--best", type=Path, help="a model=best artifact folder trained at full size")
    parser.add_argument("--skip-seed", action="store_true", help="time only the --best bundle")
    args = parser.parse_args()
    if args.best:
        time_best(args.best, args.repeats)
    if args.skip_seed:
        return
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build(Path(tmp), args.users, args.dim, args.ratings_per_user)
        rec = EmbeddingRecommender(bundle)
        rng = np.random.default_rng(1)
        anime = rng.choice(bundle.anime_ids, args.repeats)
        users = rng.choice(bundle.user_ids, args.repeats)
        for name, fn, queries in (
            ("similar_anime", lambda q: rec.similar_items(int(q), 10), anime),
            ("similar_users", lambda q: rec.similar_users(int(q), 10), users),
            ("rating_recs", lambda q: rec.recommend(int(q), 10), users),
        ):
            ms = timed(fn, queries)
            print(f"{name} median_ms={np.median(ms):.2f} p99_ms={np.percentile(ms, 99):.2f}", flush=True)


if __name__ == "__main__":
    main()
