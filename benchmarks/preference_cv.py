"""The preference head (``model.negatives_per_positive``) under the rule against noise, on the real sets.

    python benchmarks/preference_cv.py                  # the real sample and the real dev set
    python benchmarks/preference_cv.py --presets seed   # one preset

The head is a knob of the network (neutral 0: no head, rankings by predicted rating); it matters only
without the EASE ranking head, so every preset runs with ``model.ranker.kind=none``. The protocol is
the one that chooses the ranking head's settings (animerec/selection.py): each user's train + valid
ratings dealt into 5 folds; each fold is held out once, the next one is the network's early-stopping
valid split and the other three train it (the same seed for every setting, so the folds pair); NDCG@10
per user on the held-out fold (relevant = rating >= 8, candidates = anime in neither of the user's
training nor early-stopping folds); each value's paired gain over 0 with a 95% bootstrap interval over
users. A value leaves 0 only when that interval is above zero. (``model.negative_weight`` went through
the same folds at 8 negatives, at 8262bce, and was removed: docs/results.md.)
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEV, ROOT, SAMPLE, load_split  # noqa: E402

from animerec.data import demo  # noqa: E402
from animerec.evaluation import Interactions, ranking_metrics  # noqa: E402
from animerec.selection import choose_knob, deal_folds  # noqa: E402

FOLDS, K, THRESHOLD, SEED = 5, 10, 8.0, 42


def fold_ndcg(preset: str, setting: tuple[str, ...], known: pd.DataFrame, fold: np.ndarray, held: int,
              num_users: int, num_anime: int) -> np.ndarray:
    """``[num_users]`` NDCG@10 on fold ``held`` (NaN for users with nothing relevant in it)."""
    import keras

    from animerec.model import build_model, scorer_from_model
    from animerec.pipeline import compose_config
    from animerec.trainer import fit, train_data

    cfg = compose_config([f"model={preset}", "model.ranker.kind=none", "model.taste.kind=none", *setting], ROOT).model
    stop = (held + 1) % FOLDS
    train, valid, test = known[(fold != held) & (fold != stop)], known[fold == stop], known[fold == held]
    keras.utils.set_random_seed(SEED + held)
    model = build_model(cfg, num_users, num_anime)
    fit(model, train_data(train, cfg, num_anime, SEED + held, known=(valid,)),
        train_data(valid, cfg, num_anime, SEED + held + 1, known=(train,)), cfg, seed=SEED + held, verbose=0)
    scorer = scorer_from_model(model)
    found = ranking_metrics(scorer.rank_users, Interactions.from_frame(pd.concat([train, valid])),
                            Interactions.from_frame(test), k=K, relevance_threshold=THRESHOLD, per_user=True)
    out = np.full(num_users, np.nan)
    if found.get("users_evaluated"):
        out[found["users"]] = found["ndcg_values"]
    return out


def experiment(frames, num_users: int, num_anime: int, preset: str, knob: str, neutral: float, values: list[float],
               fixed: tuple[str, ...] = ()) -> dict:
    """``knob`` at each of ``values`` against ``neutral`` (the other settings ``fixed``), under the rule."""
    known = pd.concat([frames["train"], frames["valid"]], ignore_index=True)
    fold = deal_folds(known["user_index"].to_numpy(), FOLDS, SEED)
    scores = {v: np.stack([fold_ndcg(preset, (*fixed, f"model.{knob}={v}"), known, fold, f, num_users, num_anime)
                           for f in range(FOLDS)]) for v in [neutral, *values]}
    return choose_knob(neutral, scores, SEED)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["seed", "best"])
    parser.add_argument("--values", nargs="+", type=int, default=[2, 8], help="negatives per positive besides 0")
    parser.add_argument("--sets", nargs="+", choices=("sample", "dev"), default=["sample", "dev"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            frames, num_users, num_anime = load_split(demo.catalogue_path(), {"sample": SAMPLE, "dev": DEV}[name],
                                                      Path(tmp) / name, SEED, 5)
            for preset in args.presets:
                knob, found = "negatives_per_positive", experiment(frames, num_users, num_anime, preset,
                                                                   "negatives_per_positive", 0, args.values)
                print(f"{name} model={preset} (ranker none): chosen {knob}={found['chosen']}; "
                      f"fold wins {found['fold_wins']}", flush=True)
                for value, row in found["values"].items():
                    print(f"  {value:>3}: NDCG@{K} {row['mean']:.4f}  gain over {found['neutral']} {row['gain']:+.4f} "
                          f"[{row['low']:+.4f}, {row['high']:+.4f}]", flush=True)


if __name__ == "__main__":
    main()
