"""How many franchise links the titles and the co-watching asymmetry find, on the real sample and dev set.

For each set (the ratings of ``../shared/data/mal2020``, or files given), it prints how many anime of the
2020 catalogue the title rules put in a franchise of two or more entries, how many of the rated anime get a
prerequisite by co-watching (animerec/franchise.py: ``co_watch_prerequisites``, the same call the model's
storage makes), how many of those links the titles had not already made (the prerequisite in another
franchise, or the anime a franchise's first entry), and every link the titles missed, to be read.

    python benchmarks/sequel_links.py
    python benchmarks/sequel_links.py --ratings my_ratings.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from animerec.data import demo
from animerec.data.layouts import load_anime
from animerec.franchise import co_watch_prerequisites, franchise_ids

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mal2020"


def report(name: str, ratings: pd.DataFrame, anime: pd.DataFrame, franchise: pd.Series) -> None:
    rated_ids = np.unique(ratings["anime_id"].to_numpy())
    index = pd.Series(np.arange(len(rated_ids)), index=rated_ids)
    users = pd.factorize(ratings["user_id"])[0]
    titles = anime.set_index("anime_id")["name"].reindex(rated_ids).fillna("").to_numpy()
    links = co_watch_prerequisites(users, index[ratings["anime_id"]].to_numpy(), rated_ids, titles)
    sizes = franchise.value_counts()
    in_franchises = franchise.map(sizes).gt(1)
    linked = np.flatnonzero(links >= 0)
    fam = franchise.reindex(rated_ids).to_numpy()
    first = fam == rated_ids
    new = [s for s in linked if fam[links[s]] != fam[s] or first[s]]
    print(f"\n{name}: {ratings['user_id'].nunique()} users, {len(rated_ids):,} anime rated")
    print(f"  titles: {int(in_franchises.sum()):,} of the catalogue's {len(anime):,} anime are in a franchise of 2+ "
          f"entries ({int((sizes > 1).sum()):,} franchises); of the rated anime, {int(in_franchises.reindex(rated_ids).sum()):,}")
    print(f"  co-watching: {len(linked):,} rated anime have a prerequisite; {len(new):,} of the links are ones the "
          f"titles had not made")
    names = anime.set_index("anime_id")["name"]
    for s in new:
        print(f"    {names.get(rated_ids[s], '?')}  <-  {names.get(rated_ids[links[s]], '?')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", nargs="*", type=Path,
                        default=[SHARED / "rating_complete_sample.csv", SHARED / "rating_complete_dev.csv"])
    args = parser.parse_args()
    anime = load_anime(demo.catalogue_path())
    franchise = franchise_ids(anime)
    for path in args.ratings:
        report(path.name, pd.read_csv(path), anime, franchise)


if __name__ == "__main__":
    main()
