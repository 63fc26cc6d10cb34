"""Rating and ranking quality of the seed model, the best preset and the peers, on one split.

One ratings file (``user_id,anime_id,rating``, or any layout the preprocess step reads) goes
through the project's own preprocessing: the same filters and one seeded per-user
train/valid/test split. Every contender trains on train (the Keras models also early-stop on
valid) and is scored on test the way the train step scores: RMSE on the 1-10 scale, and
recall@10 / NDCG@10 where relevant items are test items rated >= 8 and candidates are all anime
not in the user's training ratings.

Contenders: ``seed`` (the default model), ``best`` (the ``model=best`` preset), ``popularity``
(most rated in train), scikit-surprise's ``SVD``, and three peers whose settings are chosen on
the valid split only (NDCG@10; test is scored once): implicit's ``ALS`` (factors, regularisation),
``EASE`` (Steck 2019; lambda) and ``RP3beta`` (alpha, beta), the last two written here in numpy
(``pip install -e ".[peers]"`` for ALS and SVD; a missing peer is reported and skipped).
Test candidates exclude each user's train and valid anime; recall@10 = hits / min(10, relevant).

    python benchmarks/quality.py                               # the real sample, the real dev set, the demo data
    python benchmarks/quality.py --ratings my_ratings.csv --anime anime.csv
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.data import demo
from animerec.data.layouts import load_anime
from animerec.data.preprocess import PreprocessOptions, preprocess
from animerec.evaluation import Interactions, popularity_scorer, ranking_metrics, rating_errors

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "fixtures" / "rating_complete_sample.csv"
DEV = ROOT / "tests" / "fixtures" / "rating_complete_dev.csv"  # 200 more real users, none in the sample
K, THRESHOLD = 10, 8.0


def load_split(anime_path: Path, ratings_path: Path, workdir: Path, seed: int, min_user_ratings: int):
    options = PreprocessOptions(min_user_ratings=min_user_ratings, split_seed=seed, unknown_anime="drop")
    workdir.mkdir(parents=True, exist_ok=True)
    preprocess(anime_path, ratings_path, options, workdir)
    frames = {name: pd.read_parquet(workdir / f"{name}.parquet") for name in ("train", "valid", "test")}
    with np.load(workdir / "encoders.npz") as encoders:
        return frames, len(encoders["user_ids"]), len(encoders["anime_ids"])


def demo_ratings(workdir: Path, num_users: int) -> tuple[Path, Path]:
    anime = load_anime(demo.catalogue_path())
    ratings = demo.make_ratings(anime, demo.DemoSpec(num_users=num_users))
    path = workdir / "demo_ratings.csv"
    ratings.to_csv(path, index=False)
    return demo.catalogue_path(), path


# contenders: each returns (score_users(user_indices) -> [n, num_anime], predict(users, anime) -> 1-10 or None)
def keras_model(preset: str, seed: int, overrides: tuple[str, ...] = ()):
    def contender(frames, num_users, num_anime):
        import keras

        from animerec.model import build_model, scorer_from_model
        from animerec.pipeline import compose_config
        from animerec.trainer import fit, train_data

        cfg = compose_config([f"model={preset}", *overrides], ROOT)["model"]
        keras.utils.set_random_seed(seed)
        model = build_model(cfg, num_users, num_anime)
        train, valid = frames["train"], frames["valid"]
        fit(model, train_data(train, cfg, num_anime, seed, known=(valid,)),
            train_data(valid, cfg, num_anime, seed + 1, known=(train,)), cfg, seed=seed, verbose=0)
        scorer = scorer_from_model(model)
        lo, hi = _scale(frames)
        return scorer.rank_users, lambda u, a: scorer.score_pairs(u, a) * (hi - lo) + lo

    return contender


def _scale(frames) -> tuple[float, float]:
    """The min-max scale preprocess used: the lowest and highest rating it kept (rating = scaled * (hi - lo) + lo)."""
    rows = pd.concat(frames.values())
    return float(rows.rating.min()), float(rows.rating.max())


def popularity(frames, num_users, num_anime):
    return popularity_scorer(Interactions.from_frame(frames["train"]), num_anime), None


def surprise_svd(frames, num_users, num_anime):
    from surprise import SVD, Dataset, Reader

    train = frames["train"]
    data = Dataset.load_from_df(train[["user_index", "anime_index", "rating"]], Reader(rating_scale=(1, 10)))
    algo = SVD(random_state=0)
    algo.fit(data.build_full_trainset())
    trainset = algo.trainset
    pu, qi, bu, bi, mu = algo.pu, algo.qi, algo.bu, algo.bi, trainset.global_mean
    known = np.array([trainset.knows_item(_inner(trainset.to_inner_iid, a)) for a in range(num_anime)])
    items = np.array([_inner(trainset.to_inner_iid, a) for a in np.flatnonzero(known)])

    def score(users):
        out = np.full((len(users), num_anime), -np.inf, dtype=np.float32)  # never-rated anime last
        for row, user in enumerate(users):
            inner = _inner(trainset.to_inner_uid, user)
            out[row, known] = mu + bi[items] + ((bu[inner] + qi[items] @ pu[inner]) if inner >= 0 else 0.0)
        return out

    def predict(users, anime):
        return np.clip([algo.predict(int(u), int(a)).est for u, a in zip(users, anime)], 1, 10)

    return score, predict


def _inner(to_inner, raw) -> int:
    try:
        return to_inner(int(raw))
    except ValueError:
        return -1


def _matrix(frame, num_users, num_anime):
    """Users x anime, 1 where the user rated the anime (any rating: an item-based peer's input)."""
    import scipy.sparse as sp

    return sp.csr_matrix((np.ones(len(frame), np.float32), (frame.user_index, frame.anime_index)),
                         shape=(num_users, num_anime))


def tuned(name, fit, grid, frames, num_users, num_anime):
    """Fit ``fit(train_matrix, **params) -> score`` for every setting in ``grid``; keep the best NDCG@10 on valid.

    Valid candidates are the anime not in the user's training ratings; test is never looked at.
    """
    import itertools

    train, valid = Interactions.from_frame(frames["train"]), Interactions.from_frame(frames["valid"])
    matrix = _matrix(frames["train"], num_users, num_anime)
    keys = list(grid)
    best = None
    for values in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, values))
        score = fit(matrix, **params)
        ndcg = ranking_metrics(score, train, valid, k=K, relevance_threshold=THRESHOLD)[f"ndcg_at_{K}"]
        if best is None or ndcg > best[0]:
            best = (ndcg, params, score)
    print(f"  {name}: chose {best[1]} (valid NDCG@{K} {best[0]:.4f} over {len(list(itertools.product(*grid.values())))} settings)")
    return best[2], None


def _dense_scores(matrix, weights):
    return lambda users: np.asarray(matrix[users] @ weights, dtype=np.float32)


def fit_ease(matrix, lam):
    """EASE (Steck 2019): B = I - P diag(1/diag(P)), P = (X'X + lam I)^-1, zero diagonal; scores X B."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return _dense_scores(matrix, weights.astype(np.float32))


def fit_rp3beta(matrix, alpha, beta):
    """RP3beta (Paudel et al. 2017): 3-step random-walk item-item weights ** alpha, divided by popularity ** beta."""
    import scipy.sparse as sp

    def row_normalised(m):
        sums = np.asarray(m.sum(axis=1)).ravel()
        return sp.diags(1.0 / np.maximum(sums, 1e-12)) @ m

    walk = (row_normalised(matrix.T.tocsr()) @ row_normalised(matrix)).toarray()
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    weights = np.power(walk, alpha) / np.power(np.maximum(popularity, 1.0), beta)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return _dense_scores(matrix, weights.astype(np.float32))


def fit_als(matrix, factors, regularization, iterations):
    from implicit.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                    random_state=0)
    model.fit(matrix, show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda u: users[u] @ items.T


def ease(frames, num_users, num_anime):
    return tuned("EASE", fit_ease, {"lam": [10, 30, 100, 200, 500, 1000, 3000]}, frames, num_users, num_anime)


def rp3beta(frames, num_users, num_anime):
    return tuned("RP3beta", fit_rp3beta, {"alpha": [0.5, 0.75, 1.0], "beta": [0.0, 0.25, 0.5, 0.75]},
                 frames, num_users, num_anime)


def implicit_als(frames, num_users, num_anime):
    return tuned("implicit ALS", fit_als, {"factors": [32, 64, 128], "regularization": [0.01, 0.1, 1.0],
                                           "iterations": [15]}, frames, num_users, num_anime)


CONTENDERS = {
    "seed": keras_model("seed", 42),
    "best": keras_model("best", 42),
    "popularity": popularity,
    "surprise SVD": surprise_svd,
    "implicit ALS": implicit_als,
    "EASE": ease,
    "RP3beta": rp3beta,
}


def evaluate(frames, num_users, num_anime, names) -> pd.DataFrame:
    """Each contender trained on train (tuned on valid), scored once on test; train and valid anime are not candidates."""
    known = Interactions.from_frame(pd.concat([frames["train"], frames["valid"]]))
    test = Interactions.from_frame(frames["test"])
    rows = []
    for name in names:
        started = time.perf_counter()
        try:
            score, predict = CONTENDERS[name](frames, num_users, num_anime)
        except ImportError as err:
            print(f"  {name}: skipped ({err}; pip install -e '.[peers]')")
            continue
        row = {"model": name}
        row["rmse"] = rating_errors(predict(test.user, test.anime), test.rating)["rmse"] if predict else float("nan")
        row.update(ranking_metrics(score, known, test, k=K, relevance_threshold=THRESHOLD))
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
    return pd.DataFrame(rows).drop(columns=["users_evaluated"])


def report(title: str, frames, num_users, num_anime, names) -> pd.DataFrame:
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in frames.items())
    print(f"\n== {title}: {num_users:,} users, {num_anime:,} anime; ratings {sizes}")
    table = evaluate(frames, num_users, num_anime, names)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
        print(table.to_string(index=False))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=Path, help="a ratings file; default: the real sample, then the demo data")
    parser.add_argument("--anime", type=Path, default=None, help="its catalogue (default: the bundled 2020 one)")
    parser.add_argument("--demo-users", type=int, default=1500, help="users of the demo data (default 1500)")
    parser.add_argument("--seed", type=int, default=42, help="split seed")
    parser.add_argument("--min-user-ratings", type=int, default=20)
    parser.add_argument("--only", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        anime = args.anime or demo.catalogue_path()
        datasets = [(f"{args.ratings}", anime, args.ratings)] if args.ratings else [
            ("real MAL sample (tests/fixtures/rating_complete_sample.csv)", demo.catalogue_path(), SAMPLE),
            ("real MAL dev set (tests/fixtures/rating_complete_dev.csv)", demo.catalogue_path(), DEV),
            ("demo data", *demo_ratings(tmp, args.demo_users)),
        ]
        for number, (title, anime_path, ratings_path) in enumerate(datasets):
            work = tmp / f"split{number}"
            frames, num_users, num_anime = load_split(anime_path, ratings_path, work, args.seed, args.min_user_ratings)
            report(title, frames, num_users, num_anime, args.only)


if __name__ == "__main__":
    main()
