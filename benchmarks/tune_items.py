"""The ranking head's cross-validation over fewer anime: does it choose the same setting, and how fast?

For the real sample, the real dev set and the demo data, the head's choice (animerec/ranking_cv.py, the
``model=best`` grid) with its folds' EASE over the 5,000, 2,000 and 1,000 most-rated anime
(``model.ranker.tune_items``): the setting chosen, its cross-validated NDCG@10, the L2 values within noise
and the seconds it took. docs/results.md quotes one run.

    python benchmarks/tune_items.py
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import DEV, ROOT, SAMPLE, demo_ratings, load_split  # noqa: E402

from animerec.data import demo  # noqa: E402
from animerec.pipeline import compose_config  # noqa: E402
from animerec.ranking_cv import cross_validate  # noqa: E402


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    cfg = compose_config(["model=best"], ROOT).model.ranker
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sets = [("sample", demo.catalogue_path(), SAMPLE, 5), ("dev", demo.catalogue_path(), DEV, 5),
                ("demo", *demo_ratings(tmp, 1500), 20)]
        for name, anime, ratings, least in sets:
            frames, num_users, num_anime = load_split(anime, ratings, tmp / name, 42, least)
            for items in (5000, 2000, 1000):
                started = time.perf_counter()
                setting, report = cross_validate(cfg.model_copy(update=dict(tune_items=items)), frames["train"],
                                                 frames["valid"], num_users, num_anime, k=10, threshold=8.0, seed=42,
                                                 folds=5)
                mean = report["l2"]["curve"][f"{setting['l2']:g}"]["mean"]
                print(f"{name} ({num_anime} anime), tune_items {items}: {setting}, CV NDCG@10 {mean:.4f}, "
                      f"within noise {report['l2']['within_noise']}, {time.perf_counter() - started:.1f} s",
                      flush=True)


if __name__ == "__main__":
    main()
