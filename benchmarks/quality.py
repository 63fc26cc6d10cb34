"""Rating and ranking quality of the seed model, the best preset and the peers, on one split.

One ratings file (``user_id,anime_id,rating``, or any layout the preprocess step reads) goes
through the project's own preprocessing: the same filters and one seeded per-user
train/valid/test split. Every contender trains on train (the Keras models also early-stop on
valid) and is scored on test the way the train step scores: RMSE on the 1-10 scale, and
recall@10 / NDCG@10 where relevant items are test items rated >= 8 and candidates are all anime
not in the user's training ratings.

Contenders: ``seed`` (the default model), ``best`` (the ``model=best`` preset), ``popularity``
(most rated in train), scikit-surprise's ``SVD`` and implicit's ``ALS`` (``pip install -e
".[peers]"``; a missing peer is reported and skipped).

    python benchmarks/quality.py                               # the real 91-user sample and the demo data
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


def implicit_als(frames, num_users, num_anime):
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    train = frames["train"]
    matrix = sp.csr_matrix((np.ones(len(train), np.float32), (train.user_index, train.anime_index)),
                           shape=(num_users, num_anime))
    model = AlternatingLeastSquares(factors=64, regularization=0.05, iterations=20, random_state=0)
    model.fit(matrix, show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return (lambda u: users[u] @ items.T), None


CONTENDERS = {
    "seed": keras_model("seed", 42),
    "best": keras_model("best", 42),
    "popularity": popularity,
    "surprise SVD": surprise_svd,
    "implicit ALS": implicit_als,
}


def evaluate(frames, num_users, num_anime, names) -> pd.DataFrame:
    train, test = Interactions.from_frame(frames["train"]), Interactions.from_frame(frames["test"])
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
        row.update(ranking_metrics(score, train, test, k=K, relevance_threshold=THRESHOLD))
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
            ("demo data", *demo_ratings(tmp, args.demo_users)),
        ]
        for number, (title, anime_path, ratings_path) in enumerate(datasets):
            work = tmp / f"split{number}"
            frames, num_users, num_anime = load_split(anime_path, ratings_path, work, args.seed, args.min_user_ratings)
            report(title, frames, num_users, num_anime, args.only)


if __name__ == "__main__":
    main()
