"""The rating network's knobs under the rule against noise, on the real sets.

    python benchmarks/network_cv.py                                          # the preference head (NDCG@10)
    python benchmarks/network_cv.py --knob use_bias --neutral false --values true --metric rmse --presets best
    python benchmarks/network_cv.py --knob lr.schedule --neutral rampup_decay --values cosine constant --metric rmse
    python benchmarks/network_cv.py --knob activation,loss --neutral sigmoid,binary_crossentropy \
        --values linear,mean_squared_error sigmoid,huber --metric rmse      # keys that go together: one knob

A knob of the network has a neutral value (the seed's); it leaves it only when its paired gain over it
has a 95% interval above zero. The protocol is the one that chooses the ranking head's settings
(animerec/selection.py): each user's train + valid ratings dealt into 5 folds; each fold is held out once,
the next one is the network's early-stopping valid split and the other three train it (the same seed for
every value, so the folds pair). Scored per user on the held-out fold: ``ndcg`` (NDCG@10, relevant =
rating >= 8, candidates = anime in neither of the user's training nor early-stopping folds) or ``rmse``
(on the 1-10 scale; the gain is the neutral value's RMSE minus the value's). Every preset runs with
``model.ranker.kind=none`` and no taste index: neither touches the network, and the preference head ranks
only without the ranking head. (``model.negative_weight`` went through the same folds at 8 negatives, at
8262bce, and was removed: docs/results.md.)
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


def fold_scores(preset: str, setting: tuple[str, ...], known: pd.DataFrame, fold: np.ndarray, held: int,
                num_users: int, num_anime: int, metric: str) -> np.ndarray:
    """``[num_users]`` NDCG@10 or minus RMSE on fold ``held`` (NaN for users it does not score)."""
    import keras

    from animerec.model import build_model, scorer_from_model
    from animerec.pipeline import compose_config
    from animerec.trainer import fit
    from animerec.training.sampling import train_data

    cfg = compose_config([f"model={preset}", "model.ranker.kind=none", "model.taste.kind=none", *setting], ROOT).model
    stop = (held + 1) % FOLDS
    train, valid, test = known[(fold != held) & (fold != stop)], known[fold == stop], known[fold == held]
    keras.utils.set_random_seed(SEED + held)
    model = build_model(cfg, num_users, num_anime)
    fit(model, train_data(train, cfg, num_anime, SEED + held, known=(valid,)),
        train_data(valid, cfg, num_anime, SEED + held + 1, known=(train,)), cfg, seed=SEED + held, verbose=0)
    scorer = scorer_from_model(model)
    out = np.full(num_users, np.nan)
    if metric == "rmse":  # ratings were min-max scaled over the whole split: back to 1-10 the same way
        low, high = float(known["rating"].min()), float(known["rating"].max())
        users, anime = test["user_index"].to_numpy(), test["anime_index"].to_numpy()
        error = (scorer.score_pairs(users, anime) * (high - low) + low - test["rating"].to_numpy()) ** 2
        out[:] = -np.sqrt(np.bincount(users, error, num_users) / np.maximum(np.bincount(users, None, num_users), 1))
        out[np.bincount(users, None, num_users) == 0] = np.nan
        return out
    found = ranking_metrics(scorer.rank_users, Interactions.from_frame(pd.concat([train, valid])),
                            Interactions.from_frame(test), k=K, relevance_threshold=THRESHOLD, per_user=True)
    if found.get("users_evaluated"):
        out[found["users"]] = found["ndcg_values"]
    return out


def experiment(frames, num_users: int, num_anime: int, preset: str, knob: str, neutral: str, values: list[str],
               metric: str) -> dict:
    """``knob`` at each of ``values`` against ``neutral``, under the rule."""
    known = pd.concat([frames["train"], frames["valid"]], ignore_index=True)
    fold = deal_folds(known["user_index"].to_numpy(), FOLDS, SEED)
    def setting(value: str) -> tuple[str, ...]:  # "activation,loss" = "linear,mean_squared_error": both keys
        return tuple(f"model.{k}={v}" for k, v in zip(knob.split(","), value.split(","), strict=True))

    scores = {v: np.stack([fold_scores(preset, setting(v), known, fold, f, num_users, num_anime, metric)
                           for f in range(FOLDS)]) for v in [neutral, *values]}
    return choose_knob(neutral, scores, SEED)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knob", default="negatives_per_positive",
                        help="a model.* key, or keys that go together, comma-separated (default: the preference head)")
    parser.add_argument("--neutral", default="0", help="its neutral value (default 0)")
    parser.add_argument("--values", nargs="+", default=["2", "8"], help="the values to try (default 2 8)")
    parser.add_argument("--metric", choices=("ndcg", "rmse"), default="ndcg")
    parser.add_argument("--presets", nargs="+", default=["seed", "best"])
    parser.add_argument("--sets", nargs="+", choices=("sample", "dev"), default=["sample", "dev"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    label = {"ndcg": f"NDCG@{K}", "rmse": "-RMSE"}[args.metric]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            frames, num_users, num_anime = load_split(demo.catalogue_path(), {"sample": SAMPLE, "dev": DEV}[name],
                                                      Path(tmp) / name, SEED, 5)
            for preset in args.presets:
                found = experiment(frames, num_users, num_anime, preset, args.knob, args.neutral, args.values,
                                   args.metric)
                print(f"{name} model={preset} (ranker none): chosen {args.knob}={found['chosen']}; "
                      f"fold wins {found['fold_wins']}", flush=True)
                for value, row in found["values"].items():
                    print(f"  {value:>12}: {label} {row['mean']:.4f}  gain over {found['neutral']} "
                          f"{row['gain']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]", flush=True)


if __name__ == "__main__":
    main()
