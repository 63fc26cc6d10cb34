"""The EASE ranking head: exact weights, fold-in, like-rates, the choice by cross-validation and storage."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from animerec.config import RankerConfig
from animerec.ease import ease_weights, gram_matrix, interaction_matrix
from animerec.errors import ConfigError
from animerec.ranking import ItemRanker, RankerData, like_rates
from animerec.ranking_cv import FoldEase, fit_ranker


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
    import animerec.ease as ease

    monkeypatch.setattr(ease, "_BLOCK", 4)  # 12 anime: three blocks
    rng = np.random.default_rng(2)
    x = (rng.random((50, 12)) < 0.3).astype(np.float32)
    gram = x.T @ x
    expected = reference_ease(gram, 2.0)
    np.testing.assert_allclose(ease_weights(gram, 2.0, overwrite=True), expected, atol=1e-5)


def test_bad_l2_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.ranker.l2\) must be > 0"):
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
    return RankerData(frame, 60, 25, relevance_threshold=8).ranker(10.0, 1.0)


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


def head_config(**changes) -> RankerConfig:
    values = dict(kind="ease", l2=[50.0], like_weight=[0.0], rating_weight=[0.0], tune_users=None,
                  tune_items=None)
    return RankerConfig(**{**values, **changes})


def test_fit_ranker_chooses_l2_by_cross_validation_and_fits_on_train_and_valid():
    train, valid, _test = split(random_ratings(num_users=80, per_user=12))
    cfg = head_config(l2=[0.5, 50.0, 5000.0])
    seen = []
    fitted = fit_ranker(cfg, train, valid, 80, 25, k=5, folds=4, score_tuned=lambda head: seen.append(head) or "valid")
    curve = fitted.report["l2"]["curve"]
    assert set(curve) == {"0.5", "50", "5000"} and fitted.report["folds"] == 4 and fitted.report["users"] == 80
    best = max(curve, key=lambda name: curve[name]["mean"])
    assert fitted.report["l2"]["chosen"] == best and fitted.report["chosen"]["l2"] == float(best)
    assert best in fitted.report["l2"]["within_noise"] and sum(fitted.report["l2"]["fold_wins"].values()) == 4
    assert fitted.ranker.history.nnz == len(train) + len(valid)  # the stored head knows train and valid
    assert fitted.tuned_result == "valid" and seen[0].history.nnz == len(train)  # the valid metrics' head: train only
    again = fit_ranker(cfg, train, valid, 80, 25, k=5, folds=4)  # seeded: the same choice and head
    assert again.report["l2"] == fitted.report["l2"]
    np.testing.assert_array_equal(again.ranker.weights, fitted.ranker.weights)


def test_one_eigendecomposition_gives_ease_for_every_l2():
    rng = np.random.default_rng(4)
    x = (rng.random((60, 15)) < 0.3).astype(np.float32)
    gram = np.tril(x.T @ x)
    fold = FoldEase(gram.copy())
    rows = x[:7]
    for l2 in (0.5, 5.0, 500.0):
        np.testing.assert_allclose(fold.scores(rows, l2), rows @ reference_ease(x.T @ x, l2), atol=2e-4)


def disliked_blockbusters(num_users=90, seed=0) -> pd.DataFrame:
    """Anime 0-2 are rated by almost everyone and always low; the others as in random_ratings."""
    frame = random_ratings(num_users=num_users, num_anime=25, per_user=10, seed=seed)
    frame = frame[frame["anime_index"] > 2]
    rng = np.random.default_rng(seed)
    extra = [(u, a, int(rng.integers(1, 4))) for u in range(num_users) for a in range(3) if rng.random() < 0.8]
    return pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)


def test_a_knob_leaves_neutral_only_when_its_gain_clears_zero():
    train, valid, _ = split(disliked_blockbusters())
    cfg = head_config(like_weight=[0.0, 1.0], rating_weight=[0.0, 1.0])
    fitted = fit_ranker(cfg, train, valid, 90, 25, k=5)
    like = fitted.report["like_weight"]
    # the like-rate factor pushes the disliked blockbusters down: a clear gain
    assert like["chosen"] == "1" and like["values"]["1"]["low"] > 0 and fitted.ranker.item_factor[:3].max() < 0.5
    assert set(fitted.report["rating_weight"]["values"]) == {"0", "1"}
    flat = pd.concat([train, valid]).assign(rating=9.0)  # every rating alike: weighing by rating changes nothing
    same = fit_ranker(cfg, flat.iloc[: len(train)], flat.iloc[len(train):], 90, 25, k=5)
    assert same.report["rating_weight"]["chosen"] == "0" and same.report["rating_weight"]["values"]["1"]["gain"] == 0
    assert same.ranker.rating_weight == 0.0


def test_fit_ranker_with_one_setting_takes_it_without_cross_validation():
    train, valid, _ = split(random_ratings())
    fitted = fit_ranker(head_config(l2=[20.0], like_weight=[0.5]), train, valid, 60, 25)
    assert fitted.report["chosen"] == {"l2": 20.0, "like_weight": 0.5, "rating_weight": 0.0} and "l2" not in {
        k for k, v in fitted.report.items() if isinstance(v, dict) and "curve" in v}
    counts = np.bincount(pd.concat([train, valid])["anime_index"], minlength=25)
    np.testing.assert_array_equal(np.sort(fitted.ranker.items), np.flatnonzero(counts >= 1))  # every rated anime
    assert np.all(np.diff(counts[fitted.ranker.items]) <= 0)  # most-rated first: the Gram matrix builds fastest


def test_the_folds_cover_the_most_rated_anime_only_and_the_stored_head_every_one():
    train, valid, _ = split(random_ratings(num_users=80, per_user=12))
    fitted = fit_ranker(head_config(l2=[5.0, 50.0], tune_items=10, tune_users=30), train, valid, 80, 25, k=5)
    assert fitted.report["items"] == len(fitted.ranker.items) and fitted.report["users"] == 30
    assert fitted.report["l2"]["curve"]  # chosen over 10 anime and 30 sampled users
    both = np.bincount(np.r_[train["anime_index"], valid["anime_index"]], minlength=25)
    assert len(fitted.ranker.items) == int((both > 0).sum()) > 10


def test_a_known_users_list_folded_in_ranks_as_that_user_with_the_chosen_settings():
    frame = disliked_blockbusters()
    train, valid, _ = split(frame)
    fitted = fit_ranker(head_config(like_weight=[0.0, 1.0], rating_weight=[0.0, 2.0]), train, valid, 90, 25, k=5)
    head, known = fitted.ranker, pd.concat([train, valid])
    assert fitted.report["chosen"]["like_weight"] == 1.0
    for user in (3, 42, 77):
        rows = known[known["user_index"] == user].sort_values("anime_index")
        folded = head.fold_in(rows["anime_index"].to_numpy(), ratings=rows["rating"].to_numpy())
        np.testing.assert_allclose(folded, head.rank_users([user])[0], rtol=1e-5)


def test_interaction_matrix_is_binary():
    matrix = interaction_matrix(np.array([0, 0, 1]), np.array([2, 2, 0]), 2, 3)
    assert isinstance(matrix, sp.csr_matrix) and matrix.toarray().tolist() == [[0, 0, 1], [1, 0, 0]]


def test_rating_weight_weighs_each_rated_anime_by_its_rating_over_the_users_mean():
    ratings = pd.DataFrame({"user_index": [0, 0, 1], "anime_index": [1, 2, 2], "rating": [10.0, 5.0, 7.0]})
    data = RankerData(ratings, 2, 4, 8.0)
    weighted = data.ranker(10.0, 0.0, rating_weight=2.0)
    np.testing.assert_allclose(weighted.history.toarray(), [[0, (10 / 7.5) ** 2, (5 / 7.5) ** 2, 0], [0, 0, 1, 0]],
                               rtol=1e-6)
    assert (data.ranker(10.0, 0.0).history.toarray() == [[0, 1, 1, 0], [0, 0, 1, 0]]).all()  # 0: who rated what
    stored = ItemRanker.from_arrays(weighted.arrays())
    assert stored.rating_weight == 2.0 and np.allclose(stored.history.toarray(), weighted.history.toarray())


def test_a_folded_in_list_is_weighed_as_a_known_users_history(ranker):
    frame = random_ratings()
    weighted = RankerData(frame, 60, 25, 8.0).ranker(50.0, 0.0, rating_weight=2.0)
    for user in (3, 42):
        rows = frame[frame["user_index"] == user].sort_values("anime_index")
        folded = weighted.fold_in(rows["anime_index"].to_numpy(), ratings=rows["rating"].to_numpy())
        np.testing.assert_allclose(folded, weighted.rank_users([user])[0], rtol=1e-5)
        assert not np.allclose(folded, ranker.fold_in(rows["anime_index"].to_numpy()))
