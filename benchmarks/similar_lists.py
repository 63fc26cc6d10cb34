"""Similar anime for a dozen well-known titles, as a fan reads them, beside item-kNN's.

For each title it prints the model's ten most similar anime (the product's defaults: adult anime and
unstarted sequels hidden) and item-kNN's (the co-occurrence cosine alone, over the same history and
filters), each anime with its popularity rank (1 = rated by the most people in the model's ratings),
then each method's popularity share over the 100 most-rated anime as queries (the share of their top 10
among the 50 most-rated: :func:`animerec.evaluation.popularity_share`) and the median popularity rank of
what the lists show.

    python benchmarks/similar_lists.py --model artifacts/model/v1
    python benchmarks/similar_lists.py --model artifacts/model/v1 --titles "Cowboy Bebop" "Toradora!"
    python benchmarks/similar_lists.py --train-on dev     # model=best trained on the real dev set first
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.config import ItemFilter
from animerec.evaluation import popularity_share
from animerec.recommenders import EmbeddingRecommender
from animerec.service import RecommendationService
from animerec.taste.index import TasteIndex, top_excluding

sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality.py's helpers

TITLES = ["Cowboy Bebop", "Death Note", "Toradora!", "Steins;Gate", "K-On!", "Mushishi", "Clannad",
          "Tengen Toppa Gurren Lagann", "Monster", "Haikyuu!!", "Shingeki no Kyojin", "Sen to Chihiro no Kamikakushi"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a model folder (artifacts/model/vN)")
    parser.add_argument("--train-on", choices=("dev", "sample"), help="instead: train model=best on a real set")
    parser.add_argument("--titles", nargs="+", default=TITLES)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    if (args.model is None) == (args.train_on is None):
        parser.error("give --model FOLDER or --train-on dev|sample")
    with tempfile.TemporaryDirectory() as folder:
        show(RecommendationService.from_path(args.model or trained(args.train_on, Path(folder))), args)


def trained(name: str, workdir: Path) -> Path:
    """model=best trained on a real set as benchmarks/quality.py trains it (the taste blend by cross-validation)."""
    from quality import DEV, SAMPLE, load_split, train_keras, write_model

    from animerec.data import demo
    from animerec.pipeline import compose_config
    from animerec.taste.choice import fit_taste

    frames, num_users, num_anime = load_split(demo.catalogue_path(), {"dev": DEV, "sample": SAMPLE}[name],
                                              workdir / "split", 42, 5)
    model, scorer = train_keras("best", frames, num_users, num_anime, 42)
    cfg = compose_config(["model=best"], Path(__file__).resolve().parents[1]).model.taste
    anime = pd.read_parquet(workdir / "split" / "anime.parquet")
    taste = fit_taste(cfg, frames["train"], frames["valid"], num_users, num_anime, anime).index
    return write_model(workdir / "model", workdir / "split", frames, model, scorer, taste)


def show(service: RecommendationService, args) -> None:
    bundle = service.bundle
    if bundle.taste is None:
        raise SystemExit("This model has no similar-anime index (train it with model=best).")
    knn = EmbeddingRecommender(bundle)
    knn_index = TasteIndex(bundle.taste.history)
    counts = bundle.taste.anime_counts
    rank = np.empty(len(counts), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(1, len(counts) + 1)
    shown = {"model": [], "item-kNN": []}
    for title in args.titles:
        anime_id = service.anime_id(title)
        ours, _ = service.by_rating.similar_items(anime_id, args.n, filters=ItemFilter())
        bundle.taste, real = knn_index, bundle.taste  # the same recommender and filters over co-occurrence alone
        try:
            theirs, _ = knn.similar_items(anime_id, args.n, filters=ItemFilter())
        finally:
            bundle.taste = real
        print(f"\n{bundle.anime.set_index('anime_id')['name'].get(anime_id, title)} (MAL {anime_id})")
        for name, ids in (("model", ours), ("item-kNN", theirs)):
            ranks = rank[[bundle.anime_index(int(a)) for a in ids]]
            shown[name].extend(ranks.tolist())
            names = bundle.anime.set_index("anime_id")["name"].reindex(ids).tolist()
            print(f"  {name:8s} " + "; ".join(f"{t} (#{r})" for t, r in zip(names, ranks)))

    def share(index):
        return popularity_share(lambda q, ex, n: top_excluding(index.similar_items(q), np.append(ex, q), n), counts)

    print(f"\npopularity share (100 most-rated queries, top 10 among the 50 most-rated): model "
          f"{share(bundle.taste):.2f}, item-kNN {share(knn_index):.2f}")
    print(f"median popularity rank of the lists above: model {np.median(shown['model']):.0f}, "
          f"item-kNN {np.median(shown['item-kNN']):.0f}")


if __name__ == "__main__":
    main()
