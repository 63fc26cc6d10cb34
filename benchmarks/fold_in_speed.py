"""How long folding in anyone's list takes, at the real catalogue's size.

A model with the 2020 catalogue's 17,562 anime (random weights: the time does not depend on their
values), the seed's 128-wide embeddings with biases, and optionally the EASE ranking head over
all of them ([17,562, 17,562] float32, 1.2 GB). One call = reading nothing, fitting the person's
vector (:func:`animerec.foldin.fold_in`) and the top-10 recommendation, as the CLI and the server
run it. The goal (issue "Recommend for anyone"): <= 50 ms for a 1,000-entry list on 2 cores.

    python benchmarks/fold_in_speed.py                 # lists of 100, 1,000 and 10,000 entries
    python benchmarks/fold_in_speed.py --no-ranker     # the seed model's path only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from animerec.bundle import ModelBundle
from animerec.foldin import fold_in
from animerec.profiles import AnimeList
from animerec.ranking import ItemRanker
from animerec.recommenders import EmbeddingRecommender
from animerec.scoring import Scorer


def synthetic_bundle(num_anime: int, num_users: int, dim: int, ranker: bool, seed: int = 0) -> ModelBundle:
    rng = np.random.default_rng(seed)
    scorer = Scorer.from_weights(rng.normal(size=(num_users, dim)).astype(np.float32),
                                 rng.normal(size=(num_anime, dim)).astype(np.float32), np.array([[5.0]]),
                                 np.array([0.1]), user_bias=rng.normal(0, 0.1, num_users).astype(np.float32),
                                 anime_bias=rng.normal(0, 0.1, num_anime).astype(np.float32))
    if ranker:
        history = sp.random(num_users, num_anime, density=0.01, format="csr", dtype=np.float32, random_state=seed)
        history.data[:] = 1.0
        scorer.ranker = ItemRanker(np.arange(num_anime), rng.normal(size=(num_anime, num_anime)).astype(np.float32),
                                   np.ones(num_anime, np.float32), history)
    anime_ids = np.arange(1, num_anime + 1, dtype=np.int64)
    anime = pd.DataFrame({"anime_id": anime_ids, "name": [f"anime {i}" for i in anime_ids], "genres": "Action",
                          "type": "TV", "episodes": 12.0, "score": 7.0, "members": 1000,
                          "anime_index": np.arange(num_anime)})
    ratings = pd.DataFrame({"user_index": [0], "anime_index": [0], "rating": [8]})
    return ModelBundle(None, {}, scorer, np.arange(num_users, dtype=np.int64), anime_ids, {"min": 1.0, "max": 10.0},
                       anime, ratings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anime", type=int, default=17_562)
    parser.add_argument("--users", type=int, default=10_000, help="training users (similar-user search size)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--no-ranker", action="store_true", help="without the EASE ranking head")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    bundle = synthetic_bundle(args.anime, args.users, args.dim, not args.no_ranker)
    recommender = EmbeddingRecommender(bundle)
    rng = np.random.default_rng(1)
    print(f"{args.anime:,} anime, {args.dim}-wide embeddings, ranking head: {'no' if args.no_ranker else 'EASE'}")
    for size in (100, 1_000, 10_000):
        times = []
        for _ in range(args.repeats):
            listed = AnimeList.build(rng.choice(bundle.anime_ids, size, replace=False),
                                     rng.integers(1, 11, size).astype(float), None, "a list")
            started = time.perf_counter()
            person = fold_in(bundle, listed)
            ids, _ = recommender.recommend(person, n=10)
            times.append(time.perf_counter() - started)
            assert not np.isin(ids, listed.anime_ids).any()
        print(f"  {size:>6,}-entry list: fold-in + top-10, median {np.median(times) * 1e3:6.1f} ms, "
              f"max {np.max(times) * 1e3:6.1f} ms over {args.repeats} lists")


if __name__ == "__main__":
    main()
