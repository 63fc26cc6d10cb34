"""The EASE ranking head: exact weights, fold-in, like-rates, the valid-only choice and storage."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from animerec.config import RankerConfig
from animerec.errors import ConfigError
from animerec.ranking import (
    ItemRanker,
    RankerData,
    ease_weights,
    fit_ranker,
    gram_matrix,
    interaction_matrix,
    like_rates,
)


def random_ratings(num_users=60, num_anime=25, per_user=8, seed=0) -> pd.DataFrame:
    """Two taste groups: the first half of the users mostly watch and like anime 0-14, the rest 10-24."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        liked = np.arange(0, 15) if user < num_users // 2 else np.arange(10, 25)
        weight = np.where(np.isin(np.arange(num_anime), liked), 4.0, 1.0)
        for anime in rng.choice(num_anime, size=per_user, replace=False, p=weight / weight.sum()):
            rows.append((user, int(anime), int(rng.integers(8, 11) if anime in liked else rng.integers(2, 6))))
    return pd.DataFrame(rows, columns=["user_index", "anime_index", "rating"])


def reference_ease(gram: np.ndarray, l2: float) -> np.ndarray:
    """Steck's closed form in float64 with numpy's inverse."""
    inverse = np.linalg.inv(gram.astype(np.float64) + l2 * np.eye(len(gram)))
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    return expected


def test_ease_weights_match_the_closed_form():
    rng = np.random.default_rng(1)
    x = (rng.random((40, 12)) < 0.3).astype(np.float32)
    gram = x.T @ x
    np.testing.assert_allclose(ease_weights(gram, 5.0), reference_ease(gram, 5.0), atol=1e-5)
    before = gram.copy()
    ease_weights(gram, 5.0)
    np.testing.assert_array_equal(gram, before)  # without overwrite the Gram matrix is kept
    consumed = ease_weights(gram, 5.0, overwrite=True)  # with it, LAPACK works in the Gram matrix's own memory
    assert np.shares_memory(consumed, gram) and consumed.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(consumed, reference_ease(before, 5.0), atol=1e-5)


@pytest.mark.parametrize("anime", [11, 300])  # 300: every row band and core gets rows
def test_gram_matrix_is_the_lower_triangle_of_the_co_rating_counts(anime):
    rng = np.random.default_rng(2)
    x = sp.csr_matrix((rng.random((50, anime)) < 0.35).astype(np.float32))
    x = x[:, rng.permutation(anime)]  # indices unsorted within rows
    gram = gram_matrix(x)
    dense = x.toarray().T @ x.toarray()
    np.testing.assert_array_equal(gram, np.tril(dense))  # the upper triangle stays 0: Cholesky reads the lower
    assert gram.dtype == np.float32
    # EASE from it equals EASE from the full symmetric matrix
    np.testing.assert_allclose(ease_weights(gram, 3.0), reference_ease(dense, 3.0), atol=1e-5)


def test_symmetrising_works_across_blocks(monkeypatch):
    import animerec.ranking as ranking

    monkeypatch.setattr(ranking, "_BLOCK", 4)  # 12 anime: three blocks
    rng = np.random.default_rng(2)
    x = (rng.random((50, 12)) < 0.3).astype(np.float32)
    gram = x.T @ x
    expected = reference_ease(gram, 2.0)
    np.testing.assert_allclose(ease_weights(gram, 2.0, overwrite=True), expected, atol=1e-5)


def test_bad_l2_is_a_config_error():
    with pytest.raises(ConfigError, match="model.ranker.l2 values must be > 0"):
        ease_weights(np.eye(3, dtype=np.float32), 0.0)


def test_like_rates_shrink_towards_the_overall_share():
    anime = np.array([0, 0, 0, 0, 1])
    rating = np.array([9, 9, 9, 9, 3])
    rates = like_rates(anime, rating, 3, threshold=8)
    overall = 4 / 5
    assert rates[0] == pytest.approx((4 + 10 * overall) / (4 + 10))
    assert rates[1] == pytest.approx((0 + 10 * overall) / (1 + 10))
    assert rates[2] == pytest.approx(overall)  # never rated: the overall share
    assert (like_rates(anime, np.full(5, 1), 3, threshold=8) > 0).all()  # no likes at all: still > 0


@pytest.fixture(scope="module")
def ranker():
    frame = random_ratings()
    return RankerData(frame, 60, 25, min_item_ratings=1, relevance_threshold=8).ranker(10.0, 1.0)


def test_history_is_never_a_candidate_and_uncovered_anime_score_zero(ranker):
    scores = ranker.rank_users(np.array([0, 1, 59]))
    for row, user in enumerate([0, 1, 59]):
        seen = ranker.history[user].indices
        assert np.isneginf(scores[row, seen]).all() and np.isfinite(np.delete(scores[row], seen)).all()
    narrow = ItemRanker(ranker.items[:20], ease_weights(np.eye(20, dtype=np.float32), 1.0), ranker.item_factor,
                        ranker.history)
    assert (narrow.score_rows(ranker.history[[0]])[0, 20:] == 0).all()


def test_fold_in_equals_ranking_a_known_user_with_that_history(ranker):
    for user in (3, 42):
        np.testing.assert_allclose(ranker.fold_in(ranker.history[user].indices), ranker.rank_users([user])[0])


def test_ranker_learns_the_taste_groups(ranker):
    scores = ranker.fold_in(np.array([0, 1, 2, 3]))  # a group-one fan
    top = np.argsort(-scores)[:5]
    assert (top < 15).all(), top


def test_arrays_round_trip(ranker):
    again = ItemRanker.from_arrays(ranker.arrays())
    np.testing.assert_array_equal(again.rank_users(np.arange(60)), ranker.rank_users(np.arange(60)))


def split(frame: pd.DataFrame, seed: int = 0):
    rng = np.random.default_rng(seed)
    part = rng.random(len(frame))
    return frame[part < 0.7], frame[(part >= 0.7) & (part < 0.85)], frame[part >= 0.85]


def test_fit_ranker_chooses_on_valid_and_refits_on_train_and_valid():
    train, valid, _test = split(random_ratings(num_users=80, per_user=12))
    cfg = RankerConfig(kind="ease", l2=[0.5, 50.0, 5000.0], like_weight=[0.0, 1.0], rating_power=[0.0], rating_weight=[0.0], min_item_ratings=1, refit=True,
                       tune_users=None, tune_items=None)
    fitted = fit_ranker(cfg, train, valid, 80, 25, k=5)
    grid = pd.DataFrame(fitted.report["grid"])
    assert len(grid) == 6 and grid["users_evaluated"].gt(0).all()
    best = grid.loc[grid["ndcg_at_5"].idxmax()]
    assert (fitted.report["l2"], fitted.report["like_weight"]) == (best["l2"], best["like_weight"])
    assert fitted.report["refit_on"] == "train+valid"
    assert fitted.tuned.history.nnz == len(train)  # the ranker that scores valid never saw it
    assert fitted.ranker.history.nnz == len(train) + len(valid)
    # the tuned ranker reproduces the valid score the grid recorded for the chosen setting
    from animerec.evaluation import Interactions, ranking_metrics

    again = ranking_metrics(fitted.tuned.rank_users, Interactions.from_frame(train), Interactions.from_frame(valid), k=5)
    assert again["ndcg_at_5"] == pytest.approx(best["ndcg_at_5"], rel=1e-5)
    # with a callback, the train-only ranker is scored before the refit and then dropped
    seen = []
    scored = fit_ranker(cfg, train, valid, 80, 25, k=5, score_tuned=lambda tuned: seen.append(tuned) or "valid metrics")
    assert scored.tuned is None and scored.tuned_result == "valid metrics" and len(seen) == 1
    assert seen[0].history.nnz == len(train) and np.array_equal(seen[0].weights, fitted.tuned.weights)
    np.testing.assert_array_equal(scored.ranker.weights, fitted.ranker.weights)


def test_fit_ranker_with_one_setting_and_no_refit():
    train, valid, _ = split(random_ratings())
    cfg = RankerConfig(kind="ease", l2=[20.0], like_weight=[0.5], rating_power=[0.0], rating_weight=[0.0], min_item_ratings=3, refit=False, tune_users=None, tune_items=None)
    fitted = fit_ranker(cfg, train, valid, 60, 25)
    assert fitted.ranker is fitted.tuned and fitted.report["grid"] == []
    counts = np.bincount(train["anime_index"], minlength=25)
    np.testing.assert_array_equal(np.sort(fitted.ranker.items), np.flatnonzero(counts >= 3))
    assert np.all(np.diff(counts[fitted.ranker.items]) <= 0)  # most-rated first: the Gram matrix builds fastest


@pytest.mark.parametrize("refit", [True, False])
def test_the_grid_can_be_scored_over_the_most_rated_anime_only(refit):
    train, valid, _ = split(random_ratings(num_users=80, per_user=12))
    cfg = RankerConfig(kind="ease", l2=[5.0, 50.0], like_weight=[0.0], rating_power=[0.0], rating_weight=[0.0], min_item_ratings=1,
                       refit=refit, tune_users=None, tune_items=10)
    seen = []
    fitted = fit_ranker(cfg, train, valid, 80, 25, k=5, score_tuned=seen.append)
    counts = np.bincount(train["anime_index"], minlength=25)
    assert fitted.report["tuned_items"] == 10 and len(seen) == 1
    if refit:  # the grid's train-only heads, and the one whose valid metrics are reported, cover the 10 most-rated
        np.testing.assert_array_equal(seen[0].items, np.argsort(-counts, kind="stable")[:10])
        rows = seen[0].rank_users(np.arange(80))
        assert np.all(rows[:, np.argsort(-counts, kind="stable")[10:]] <= 0)  # the others get no EASE score
    else:  # no refit: the stored head is the train-only one, fitted over every anime, and it is the one scored
        assert seen[0] is fitted.ranker
    # the stored head, with the chosen L2, covers every anime rated at least once
    assert len(fitted.ranker.items) == int((counts > 0).sum() if not refit else (
        np.bincount(np.r_[train["anime_index"], valid["anime_index"]], minlength=25) > 0).sum())
    assert fitted.ranker.history.nnz == len(train) + (len(valid) if refit else 0)
    assert fit_ranker(replace(cfg, tune_items=None), train, valid, 80, 25, k=5).report["tuned_items"] is None


def test_interaction_matrix_is_binary():
    matrix = interaction_matrix(np.array([0, 0, 1]), np.array([2, 2, 0]), 2, 3)
    assert isinstance(matrix, sp.csr_matrix) and matrix.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]


def test_rating_power_multiplies_by_the_networks_prediction_and_is_chosen_on_valid():
    head = ItemRanker(np.arange(3), np.zeros((3, 3), np.float32), np.ones(3, np.float32),
                      sp.csr_matrix((2, 3), dtype=np.float32), rating_power=2.0)
    scores = np.array([[2.0, 0.0, -np.inf]], np.float32)
    np.testing.assert_allclose(head.personalise(scores, lambda: np.array([[0.5, 1.0, 1.0]])), [[0.5, 0.0, -np.inf]])
    assert ItemRanker.from_arrays(head.arrays()).rating_power == 2.0
    off = ItemRanker.from_arrays({k: v for k, v in head.arrays().items() if k != "rating_power"})
    assert off.personalise(scores, lambda: 1 / 0) is scores  # an older head: no factor, the network is not asked

    train, valid, _ = split(random_ratings(num_users=80, per_user=12))
    liked = np.full((80, 25), 0.1, np.float32)  # a network that knows which anime each user rated in valid
    liked[valid["user_index"], valid["anime_index"]] = 1.0
    cfg = RankerConfig(kind="ease", l2=[50.0], like_weight=[0.0], rating_power=[0.0, 2.0], rating_weight=[0.0], min_item_ratings=1,
                       refit=True, tune_users=None, tune_items=None)
    fitted = fit_ranker(cfg, train, valid, 80, 25, k=5, predicted=lambda users: liked[users])
    grid = pd.DataFrame(fitted.report["grid"]).set_index("rating_power")
    assert grid.loc[2.0, "ndcg_at_5"] > grid.loc[0.0, "ndcg_at_5"] and fitted.report["rating_power"] == 2.0
    assert fitted.ranker.rating_power == fitted.tuned.rating_power == 2.0
    assert fit_ranker(cfg, train, valid, 80, 25, k=5).report["rating_power"] == 0.0  # no network: the grid is [0]


def test_the_grid_is_scored_in_two_passes_and_keeps_the_best_of_both():
    train, valid, _ = split(random_ratings(num_users=80, per_user=12))
    liked = np.full((80, 25), 0.1, np.float32)  # a network that knows which anime each user rated in valid
    liked[valid["user_index"], valid["anime_index"]] = 1.0
    cfg = RankerConfig(kind="ease", l2=[5.0, 50.0, 500.0], like_weight=[0.0, 1.0], rating_power=[0.0, 1.0, 2.0], rating_weight=[0.0],
                       min_item_ratings=1, refit=True, tune_users=None, tune_items=None)
    fitted = fit_ranker(cfg, train, valid, 80, 25, k=5, predicted=lambda users: liked[users])
    rows = pd.DataFrame(fitted.report["grid"])
    first, second = rows[rows["rating_power"] == 0.0], rows[rows["rating_power"] > 0.0]
    # every L2 with every like weight at power 0, then the other powers at the L2 the first pass chose
    assert len(first) == 3 * 2 and len(second) == 2 * 2
    assert set(second["l2"]) == {first.loc[first["ndcg_at_5"].idxmax(), "l2"]}
    chosen = rows.loc[rows["ndcg_at_5"].idxmax()]
    assert (fitted.report["l2"], fitted.report["like_weight"], fitted.report["rating_power"]) == (
        chosen["l2"], chosen["like_weight"], chosen["rating_power"]) and chosen["rating_power"] > 0


def test_rating_weight_weighs_each_rated_anime_by_its_rating_over_the_users_mean():
    ratings = pd.DataFrame({"user_index": [0, 0, 1], "anime_index": [1, 2, 2], "rating": [10.0, 5.0, 7.0]})
    data = RankerData(ratings, 2, 4, 1, 8.0)
    weighted = data.ranker(10.0, 0.0, rating_weight=2.0)
    np.testing.assert_allclose(weighted.history.toarray(), [[0, (10 / 7.5) ** 2, (5 / 7.5) ** 2, 0], [0, 0, 1, 0]],
                               rtol=1e-6)
    assert (data.ranker(10.0, 0.0).history.toarray() == [[0, 1, 1, 0], [0, 0, 1, 0]]).all()  # 0: who rated what
    stored = ItemRanker.from_arrays(weighted.arrays())
    assert stored.rating_weight == 2.0 and np.allclose(stored.history.toarray(), weighted.history.toarray())


def test_a_folded_in_list_is_weighed_as_a_known_users_history(ranker):
    frame = random_ratings()
    weighted = RankerData(frame, 60, 25, 1, 8.0).ranker(50.0, 0.0, rating_weight=2.0)
    for user in (3, 42):
        rows = frame[frame["user_index"] == user].sort_values("anime_index")
        folded = weighted.fold_in(rows["anime_index"].to_numpy(), ratings=rows["rating"].to_numpy())
        np.testing.assert_allclose(folded, weighted.rank_users([user])[0], rtol=1e-5)
        assert not np.allclose(folded, ranker.fold_in(rows["anime_index"].to_numpy()))
    dislike = weighted.fold_in(np.array([0, 1]), np.array([1.0, -0.5]), np.array([9.0, 3.0]))
    assert np.allclose(dislike, weighted.fold_in(np.array([0, 1]), np.array([(9 / 6) ** 2, -0.5])))  # kept as given


def test_the_rating_weight_is_chosen_on_valid_with_the_rating_powers():
    train, valid, _ = split(random_ratings(num_users=80, per_user=12))
    cfg = RankerConfig(kind="ease", l2=[5.0, 50.0], like_weight=[0.0], rating_power=[0.0], rating_weight=[0.0, 2.0],
                       min_item_ratings=1, refit=True, tune_users=None, tune_items=None)
    fitted = fit_ranker(cfg, train, valid, 80, 25, k=5)
    rows = pd.DataFrame(fitted.report["grid"])
    assert sorted(rows["rating_weight"]) == [0.0, 0.0, 2.0]  # both L2 unweighted, then 2 at the chosen L2
    chosen = rows.loc[rows["ndcg_at_5"].idxmax()]
    assert fitted.report["rating_weight"] == chosen["rating_weight"] == fitted.ranker.rating_weight
