"""Every candidate knob of the ranking head under the rule against noise: the pruning experiment.

    python benchmarks/knob_cv.py                 # the real sample, the real dev set, the demo data
    python benchmarks/knob_cv.py dev             # one of them

Each set's whole report goes to ``benchmarks/results/knob_cv_<set>.json``.

The same protocol as ``model=best``'s head (animerec/ranking_cv.py): the users' train + valid ratings
dealt into 5 folds, EASE's L2 by the best mean NDCG@10, then each knob at that L2 against its neutral
value, with a paired bootstrap 95% interval over users. Besides the two knobs the head keeps
(``like_weight``, ``rating_weight``), it scores the candidates that cleared the rule on neither real
set and so are not in the library, each one closed-form inversion at most:

- ``popularity``: the score divided by (the anime's rating count + 1) ** beta;
- ``dropout``: EDLAE (Steck 2020), EASE with emphasised dropout p: the Gram matrix's diagonal gets
  p / (1 - p) times itself on top of L2; its own best L2 of a few at or below the head's;
- ``dislike``: a rating below 6 weighs 1 - d in the history row (2: -1, a dislike that pulls down);
- ``rating_power``: the score times the rating network's predicted rating ** power, judged on the valid
  split alone (one fold: the network was trained on train, and a fold of train would flatter it).
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import DEV, SAMPLE, demo_ratings, load_split, train_keras  # noqa: E402

from animerec.data import demo  # noqa: E402
from animerec.ease import ease_weights, gram_matrix, most_rated, rating_matrix, weighted_history  # noqa: E402
from animerec.ranking_cv import FoldEase, _folds  # noqa: E402
from animerec.selection import choose_best, choose_knob, deal_folds, sample_users  # noqa: E402

L2 = [25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 12800.0, 25600.0, 51200.0, 102400.0]
GRIDS = {"like_weight": [0.5, 1.0], "rating_weight": [1.0, 2.0], "popularity": [0.1, 0.25, 0.5],
         "dislike": [1.0, 2.0], "dropout": [0.1, 0.25, 0.5], "rating_power": [1.0, 2.0]}
FOLDS, K, THRESHOLD, SEED = 5, 10, 8.0, 42


def fold_scores(fold, items, gram, l2, counts, *, like=0.0, weight=0.0, popularity=0.0, dislike=0.0, dropout=0.0,
                prediction=None, power=0.0) -> np.ndarray:
    """NDCG@10 per sampled user on one fold under one candidate setting."""
    from animerec.evaluation import UserItems, ranking_metrics

    history = weighted_history(fold.rows, weight)
    if dislike:
        history.data = np.where(fold.rows.data < 6.0, np.float32(1.0 - dislike), history.data).astype(np.float32)
    rows = history[:, items].toarray()
    if dropout:
        dense = gram.copy()
        dense[np.diag_indices_from(dense)] += np.float32(dropout / (1 - dropout)) * np.diag(gram)
        item_scores = rows @ ease_weights(dense, l2, overwrite=True)
    else:
        item_scores = fold.ease.scores(rows, l2)
    scores = np.zeros(fold.rows.shape, np.float32)
    scores[:, items] = np.maximum(item_scores, 0.0)
    scores *= (fold.rates ** np.float32(like) / np.power(counts + 1.0, popularity)).astype(np.float32)[None, :]
    if power:
        scores *= np.power(prediction, np.float32(power), dtype=np.float32)
    found = ranking_metrics(lambda u: scores[u], UserItems(fold.rows.indptr, fold.rows.indices), fold.held, k=K,
                            relevance_threshold=THRESHOLD, per_user=True)
    out = np.full(fold.rows.shape[0], np.nan)
    if found.get("users_evaluated"):
        out[found["users"]] = found["ndcg_values"]
    return out


def experiment(frames, num_users, num_anime, predicted) -> dict:
    train, valid = frames["train"], frames["valid"]
    cols = {n: np.concatenate([f[n].to_numpy() for f in (train, valid)]) for n in ("user_index", "anime_index", "rating")}
    ratings = rating_matrix(cols["user_index"], cols["anime_index"], cols["rating"], num_users, num_anime)
    tuned = sample_users(np.diff(ratings.indptr), FOLDS, 1000, SEED)
    items = most_rated(np.bincount(ratings.indices, minlength=num_anime))[:5000]
    others = weighted_history(ratings, 0.0).copy()
    others.data[np.isin(np.repeat(np.arange(num_users), np.diff(others.indptr)), tuned)] = 0.0
    others.eliminate_zeros()
    rest = gram_matrix(others[:, items])
    all_counts = np.bincount(ratings.indices, minlength=num_anime).astype(np.float64)
    sub = ratings[tuned]
    fold_of = deal_folds(np.repeat(np.arange(len(tuned)), np.diff(sub.indptr)), FOLDS, SEED)
    folds = []
    for fold in _folds(ratings, tuned, fold_of, range(FOLDS), THRESHOLD):
        gram = rest + gram_matrix(weighted_history(fold.rows, 0.0)[:, items])
        fold.gram, fold.counts = gram.copy(), all_counts - np.bincount(fold.held.anime, minlength=num_anime)
        fold.ease = FoldEase(gram)
        folds.append(fold)

    def table(l2, **knob):
        return np.stack([fold_scores(f, items, f.gram, l2, f.counts, **knob) for f in folds])

    l2, report = choose_best({l2: table(l2) for l2 in L2}, SEED)
    out = {"l2": report}
    neutral = table(l2)
    for name, key in (("like_weight", "like"), ("rating_weight", "weight"), ("popularity", "popularity"),
                      ("dislike", "dislike")):
        out[name] = choose_knob(0.0, {0.0: neutral, **{v: table(l2, **{key: v}) for v in GRIDS[name]}}, SEED)[1]
    options = {0.0: neutral}
    for p in GRIDS["dropout"]:  # EDLAE: its own best of L2 at and below the head's (dropout regularises too)
        options[p] = choose_best({lam: table(lam, dropout=p) for lam in (l2 / 4, l2 / 2, l2)}, SEED)
        options[p] = table(float(options[p][0]), dropout=p)
    out["dropout"] = choose_knob(0.0, options, SEED)[1]
    out["rating_power"] = rating_power(ratings, valid, tuned, items, rest, l2, predicted)
    return out


def rating_power(ratings, valid, tuned, items, rest, l2, predicted) -> dict:
    """The rating power on one fold: the sampled users' valid ratings held out (of EASE as of the network)."""
    marker = rating_matrix(valid["user_index"].to_numpy(), valid["anime_index"].to_numpy(),
                           np.ones(len(valid), np.float32), *ratings.shape)[tuned]
    sub = ratings[tuned]
    in_valid = np.asarray(marker[np.repeat(np.arange(len(tuned)), np.diff(sub.indptr)), sub.indices]).ravel() > 0
    fold = next(_folds(ratings, tuned, in_valid.astype(np.int64), [1], THRESHOLD))
    gram = rest + gram_matrix(weighted_history(fold.rows, 0.0)[:, items])
    fold.ease = FoldEase(gram)
    prediction = predicted(tuned)
    counts = np.zeros(ratings.shape[1])
    options = {p: fold_scores(fold, items, None, l2, counts, prediction=prediction, power=p)[None, :]
               for p in [0.0, *GRIDS["rating_power"]]}
    return {**choose_knob(0.0, options, SEED)[1], "on": "valid"}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"sample": lambda: (demo.catalogue_path(), SAMPLE), "dev": lambda: (demo.catalogue_path(), DEV),
                "demo": lambda: demo_ratings(tmp, 1500)}
        for name in sys.argv[1:] or list(sets):
            frames, num_users, num_anime = load_split(*sets[name](), tmp / name, SEED, 5)
            _model, scorer = train_keras("best", frames, num_users, num_anime, SEED, ("model.ranker.kind=none",))
            found = experiment(frames, num_users, num_anime, scorer.score_users)
            print(f"== {name}: L2 {found['l2']['chosen']} (within noise: {', '.join(found['l2']['within_noise'])})")
            for knob in GRIDS:
                values = found[knob]["values"]
                gains = ", ".join(f"{v}: {d['gain']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                                  for v, d in values.items() if v != "0")
                print(f"  {knob} -> {found[knob]['chosen']}  ({gains}; fold wins {found[knob]['fold_wins']})")
            out = Path(__file__).resolve().parent / "results" / f"knob_cv_{name}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(json.dumps(found, indent=1, default=float))


if __name__ == "__main__":
    main()
