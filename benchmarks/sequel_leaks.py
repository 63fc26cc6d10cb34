"""Later entries of franchises a person never started, in their recommendations: with titles alone and with
titles plus co-watching (animerec/franchise.py).

``model=best`` is trained on the real dev set (200 users) as benchmarks/quality.py trains it. Each real
sample user (91 people the model never saw) is folded in from their list with every entry of 26
hand-labelled franchises removed, and asked for 60 recommendations (``--n``) with the product's defaults
(``sequels=hide_unstarted``): a row that is a later entry of a labelled franchise is a leak. The positive
control gives each person one franchise's first entry (rated 9) and counts the franchises whose later
entries still reach at least one person. Both are printed for the titles alone (the model's
``sequels.npz`` left out) and for titles plus co-watching.

    python benchmarks/sequel_leaks.py
    python benchmarks/sequel_leaks.py --train-on demo --n 100
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import DEV, SAMPLE, demo_ratings, load_split, train_keras, write_model  # noqa: E402

from animerec.bundle import ModelBundle  # noqa: E402
from animerec.data import demo  # noqa: E402
from animerec.profiles import AnimeList  # noqa: E402
from animerec.service import RecommendationService  # noqa: E402

# (first entry, later entries) by MAL ID, TV series and films, labelled by hand from the 2020 catalogue. The
# first three kinds are the ones title rules miss: a word added to a one-word name (Mushishi, Durarara!!,
# Noragami, Genshiken, Kiniro Mosaic), a "zoku" (continuation) prefix (Natsume), and a series inside a larger
# family of the same name (Gundam 00 among the Gundams, Fate/Zero and Unlimited Blade Works among the Fates).
FRANCHISES = {
    "Mushishi": (457, [21939, 24701, 28957]),
    "Durarara!!": (6746, [23199, 27831, 27833]),
    "Noragami": (20507, [30503]),
    "Genshiken": (240, [2508, 18465]),
    "Kiniro Mosaic": (16732, [23269, 33034, 41471]),
    "Natsume Yuujinchou": (4081, [5300, 10379, 11665, 32983, 34591, 36538]),
    "Mobile Suit Gundam 00": (2581, [3927, 6288]),
    "Fate/Zero": (10087, [11741]),
    "Fate/stay night: Unlimited Blade Works": (22297, [28701]),
    "Shingeki no Kyojin": (16498, [25777, 35760, 38524, 40028]),
    "Haikyuu!!": (20583, [28891, 32935, 38883, 40776]),
    "Steins;Gate": (9253, [11577, 30484]),
    "Code Geass": (1575, [2904]),
    "Kuroko no Basket": (11771, [16894, 24415, 31658]),
    "Tokyo Ghoul": (22319, [27899, 36511, 37799]),
    "Full Metal Panic!": (71, [72, 73, 31931]),
    "Koukaku Kidoutai: Stand Alone Complex": (467, [801]),
    "To LOVE-Ru": (3455, [9181, 13663, 28979]),
    "Kore wa Zombie Desu ka?": (8841, [10790]),
    "Working!!": (6956, [10521, 25879]),
    "Mob Psycho 100": (32182, [37510]),
    "One Punch Man": (30276, [34134]),
    "Overlord": (29803, [35073, 37675]),
    "Re:Zero": (31240, [39587]),
    "Kaguya-sama": (37999, [40591]),
    "Sword Art Online": (11757, [21881, 36474, 39597, 40540]),
}


def recommend(service: RecommendationService, ids: np.ndarray, ratings: np.ndarray, n: int) -> np.ndarray:
    person = service.person(ratings=AnimeList.build(ids, ratings, None, "a list"))
    return service.by_rating.recommend(person, n=n, filters=service_filter())[0]


def service_filter():
    from animerec.config import ItemFilter

    return ItemFilter()  # the product's defaults: hide_unstarted, adult anime hidden


def measure(service: RecommendationService, people: dict, n: int) -> tuple[Counter, int, int]:
    """(leaked anime with how often, rows in all, franchises whose sequels reach someone who rated only the first
    entry)."""
    every = {a for first, later in FRANCHISES.values() for a in [first, *later]}
    later = {a for _, entries in FRANCHISES.values() for a in entries}
    leaks, rows = Counter(), 0
    reached = set()
    for ids, ratings in people.values():
        keep = ~np.isin(ids, list(every))
        picks = recommend(service, ids[keep], ratings[keep], n)
        leaks.update(int(a) for a in picks if a in later)
        rows += len(picks)
        for name, (first, entries) in FRANCHISES.items():
            if name not in reached:
                picks = recommend(service, np.append(ids[keep], first), np.append(ratings[keep], 9.0), n)
                if np.isin(picks, entries).any():
                    reached.add(name)
    return leaks, rows, len(reached)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60, help="recommendations per person (default 60)")
    parser.add_argument("--train-on", choices=("dev", "demo"), default="dev",
                        help="the real dev set (default) or the demo data (1,500 users resampled from real lists)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        ratings, least = (DEV, 5) if args.train_on == "dev" else (demo_ratings(workdir, 1500)[1], 20)
        frames, num_users, num_anime = load_split(demo.catalogue_path(), ratings, workdir / "dev", 42, least)
        model, scorer = train_keras("best", frames, num_users, num_anime, 42)
        bundle = ModelBundle.load(write_model(workdir / "best", workdir / "dev", frames, model, scorer))
        sample = pd.read_csv(SAMPLE)
        people = {user: (group.anime_id.to_numpy(), group.rating.to_numpy(float))
                  for user, group in sample[sample.rating > 0].groupby("user_id") if len(group) >= 5}
        linked = int((bundle.sequels.prerequisite >= 0).sum())
        print(f"model=best on the {args.train_on} data; {len(people)} sample users; {linked} anime with a prerequisite "
              f"by co-watching; {len(FRANCHISES)} hand-labelled franchises; {args.n} recommendations each")
        for name, links in (("titles alone", None), ("titles + co-watching", bundle.sequels)):
            service = RecommendationService(dataclasses.replace(bundle, sequels=links))
            leaks, rows, reached = measure(service, people, args.n)
            total = sum(leaks.values())
            print(f"  {name}: {total} of {rows} rows ({total / rows:.1%}) are later entries of unstarted franchises; "
                  f"positive control: {reached} of {len(FRANCHISES)} franchises' sequels reach someone who rated "
                  f"only the first entry")
            names = bundle.anime.set_index("anime_id")["name"]
            print("    " + "; ".join(f"{names.get(a, a)} ({count})" for a, count in leaks.most_common(12)))


if __name__ == "__main__":
    main()
