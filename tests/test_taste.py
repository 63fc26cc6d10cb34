"""The taste index (animerec/taste/index.py): exact co-occurrence and content similarity,
the blend chosen by cross-validation (animerec/taste/choice.py), and storage."""


import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from animerec.ease import interaction_matrix as history_matrix
from animerec.pipeline import compose_config
from animerec.taste.choice import fit_taste
from animerec.taste.index import TasteIndex, blend, content_matrix, top_excluding, weight_grid
from tests.conftest import PROJECT_ROOT, model_config

ANIME = pd.DataFrame({
    "anime_id": [1, 2, 3, 4, 99],
    "genres": ["Action, Mecha", "Action, Mecha, Drama", "Romance, School", "Romance, Drama", "Comedy"],
    "type": ["TV", "TV", "TV", "Movie", "TV"],
    "source": ["Original", "Original", "Manga", "Manga", None],
    "anime_index": [0, 1, 2, 3, -1],  # 99: in the catalogue, never rated
})


def taste_config(**changes):
    return model_config("model=best").taste.model_copy(update=changes)


def block_lists(users_per_block=40, items_per_block=10, seed=0):
    """Two groups of people, each watching (most of) its own block of anime: ``[2 * users, 2 * items]`` CSR."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(2 * users_per_block):
        block = user // users_per_block
        items = np.flatnonzero(rng.random(items_per_block) < 0.6) + block * items_per_block
        rows += [user] * len(items)
        cols += items.tolist()
    return history_matrix(np.array(rows), np.array(cols), 2 * users_per_block, 2 * items_per_block)


def test_cooc_similarity_is_the_cosine_of_who_rated_what_scaled_by_the_largest():
    #            anime: 0  1  2
    history = sp.csr_matrix(np.array([[1, 1, 0],
                                      [1, 1, 1],
                                      [1, 0, 1],
                                      [0, 0, 1]], np.float32))
    index = TasteIndex(history)
    cooc = index.item_parts(0)["cooc"]
    raw = np.array([3 / 3, 2 / np.sqrt(3 * 2), 2 / np.sqrt(3 * 3)])  # co-raters / sqrt(raters * raters)
    np.testing.assert_allclose(cooc, raw / raw[1:].max(), rtol=1e-6)  # the query's own value is not the scale
    held = TasteIndex(history, corated=(history.T @ history).toarray())  # the tuning index holds every count
    for q in range(3):
        np.testing.assert_allclose(held.item_parts(q)["cooc"], index.item_parts(q)["cooc"], rtol=1e-6)
    users = index.similar_users(0)  # user 0 rated {0, 1}
    raw = np.array([2 / 2, 2 / np.sqrt(2 * 3), 1 / np.sqrt(2 * 2), 0.0])
    np.testing.assert_allclose(users, raw / raw[1:].max(), rtol=1e-6)
    # the same list given as a list: no user is left out of the scale, and user 0 itself scores the raw 1.0
    np.testing.assert_allclose(index.similar_users(listed=np.array([0, 1])), raw, rtol=1e-6)


def test_co_rating_counts_are_the_same_counted_in_two_threads(monkeypatch):
    from animerec import kernels
    from animerec.taste import index as taste_index

    history = sp.random(300, 40, density=0.3, format="csr", random_state=1, dtype=np.float32)
    history.data[:] = 1
    rows = np.array([3, 7, 11, 19, 39])
    expected = np.asarray(history[rows].sum(axis=0)).ravel()
    np.testing.assert_array_equal(taste_index._row_counts(history, rows), expected)  # one thread
    monkeypatch.setattr(kernels, "SPLIT_COUNTS", 1)  # every call splits its entries between two threads
    np.testing.assert_array_equal(taste_index._row_counts(history, rows), expected)
    assert taste_index._row_counts(history, rows).dtype == np.float32
    np.testing.assert_array_equal(taste_index._row_counts(history, rows[:0]), np.zeros(40))  # no rows


def test_content_similarity_shares_genres_and_gives_unrated_anime_no_row():
    content = content_matrix(ANIME, 5)
    assert content.shape[0] == 5 and content[4].nnz == 0  # index 4 is no anime of the model
    sims = (content @ content[0].T).toarray().ravel()
    assert sims[1] > sims[2] > sims[3] == 0 and np.isclose(sims[0], 1.0)  # 2 shares only the type (TV)
    with_synopsis = ANIME.assign(synopsis=["giant robots fight", "giant robots again", "a school love story",
                                           "a love story in a school", None])
    text = content_matrix(with_synopsis, 5)
    assert (text @ text[2].T).toarray().ravel()[3] > (content @ content[2].T).toarray().ravel()[3]
    # studios (MAL's "None found" and "add some" are no studio); synopses all stop words add nothing
    studios = ANIME.assign(studios=["Sunrise", "Bones, Madhouse", "Madhouse", "None found", "add some"],
                           synopsis=["the", "and a", None, "it is", None])
    made = content_matrix(studios, 5)
    shared = (made @ made[2].T).toarray().ravel()
    assert shared[1] > (content @ content[2].T).toarray().ravel()[1]  # Madhouse, on top of the type
    assert made.shape[1] == content.shape[1] + 3  # one term per real studio, no synopsis terms
    empty = content_matrix(pd.DataFrame({"anime_id": [1], "genres": [""], "anime_index": [0]}), 3)
    assert empty.shape == (3, 1) and empty.nnz == 0  # nothing to describe an anime with: no similarity


def test_blend_weights_grid_and_top_excluding():
    parts = {"cooc": np.array([1.0, 0.5, 0.0]), "content": np.array([0.0, 1.0, 1.0])}
    np.testing.assert_allclose(blend(parts, {"cooc": 1.0, "content": 0.5, "other": 2.0}), [1.0, 1.0, 0.5])
    assert weight_grid({"cooc": [0, 1], "content": [0, 0.5]}) == [
        {"cooc": 0.0, "content": 0.5}, {"cooc": 1.0, "content": 0.0}, {"cooc": 1.0, "content": 0.5}]
    assert list(top_excluding(np.array([0.3, 0.9, 0.9, 0.1]), [1], 3)) == [2, 0, 3]
    assert list(top_excluding(np.array([0.3, 0.9]), [0, 1], 3)) == []


def frames_of(lists: sp.csr_matrix, seed=0):
    """Each user's anime split 60/20/20 into train, valid and test frames (ratings: 9 or 5 at random)."""
    rng = np.random.default_rng(seed)
    coo = lists.tocoo()
    split = rng.choice(3, size=coo.nnz, p=[0.6, 0.2, 0.2])
    rating = np.where(rng.random(coo.nnz) < 0.7, 9, 5)
    frame = pd.DataFrame({"user_index": coo.row, "anime_index": coo.col, "rating": rating})
    return [frame[split == s].reset_index(drop=True) for s in range(3)]


def test_fit_taste_chooses_the_blend_by_cross_validation_and_knows_train_and_valid():
    lists = block_lists(30, 12)
    train, valid, _test = frames_of(lists)
    anime = pd.DataFrame({"anime_id": np.arange(24) + 1, "genres": ["Action"] * 12 + ["Romance"] * 12,
                          "type": "TV", "source": None, "anime_index": np.arange(24)})
    cfg = taste_config(tune_users=None, item_weights={"cooc": [0.0, 1.0], "content": [0.0, 0.1]})
    found = fit_taste(cfg, train, valid, 60, 24, anime, seed=3, folds=3)
    index, report = found.index, found.report
    assert report["item_weights"] in weight_grid(cfg.item_weights) and report["folds"] == 3
    assert len(report["curve"]["curve"]) <= 3 and len(report["popularity_share"]) == 3  # 3 blends; some eligible
    assert report["chosen"] in report["curve"]["curve"] and sum(report["curve"]["fold_wins"].values()) == 3
    for part, found_part in report["parts"].items():  # every part the best blend had was put to the rule
        assert found_part["chosen"] in found_part["values"] and part in report["best_by_mean"]
    both = pd.concat([train, valid])
    assert index.history.nnz == len(both.drop_duplicates(["user_index", "anime_index"]))  # train + valid, not test
    # the block structure is found: an anime's 5 most similar are in its own block
    top = top_excluding(index.similar_items(0), [0], 5)
    assert (top < 12).all(), top


def test_arrays_round_trip_with_every_part():
    lists = block_lists(10, 6)
    anime = pd.DataFrame({"anime_id": np.arange(12) + 1, "genres": ["Action"] * 6 + ["Romance"] * 6, "type": "TV",
                          "source": None, "anime_index": np.arange(12)})
    index = TasteIndex(lists, content_matrix(anime, 12), {"cooc": 1.0, "content": 0.1})
    again = TasteIndex.from_arrays(dict(index.arrays()))
    for q in (0, 7):
        np.testing.assert_allclose(again.similar_items(q), index.similar_items(q), rtol=1e-6)
    np.testing.assert_allclose(again.similar_users(3), index.similar_users(3), rtol=1e-6)
    assert again.item_weights == index.item_weights
    older = {**index.arrays(), "item_parts": np.array(["cooc", "learned", "ease"]),
             "item_weights": np.array([1.0, 0.5, 1.0]), "ease_indptr": np.zeros(13, np.int64)}
    assert TasteIndex.from_arrays(older).item_weights == {"cooc": 1.0}  # a removed part of an older index is not read


def test_an_all_zero_grid_is_a_config_error_naming_the_key():
    from animerec.errors import ConfigError

    assert weight_grid({"cooc": [0.0], "content": [0.0]}) == []
    zeros = [f"model.taste.item_weights.{part}=[0]" for part in ("cooc", "content")]
    with pytest.raises(ConfigError, match=r"model.taste.item_weights=.*every weight is 0.*item_weights.cooc=\[1.0\]"):
        compose_config(["model=best", *zeros], PROJECT_ROOT)
    compose_config(["model=seed", *zeros], PROJECT_ROOT)  # no blend, no rule: the seed preset ignores the weights


def test_work_in_two_threads_returns_both_halves_and_raises_the_helpers_error():
    from animerec.threads import in_two_threads

    assert in_two_threads(lambda: 1, lambda: "two") == (1, "two")
    with pytest.raises(ZeroDivisionError):
        in_two_threads(lambda: 1, lambda: 1 / 0)


def test_a_blend_that_leans_on_the_most_watched_is_not_chosen_however_many_hits_it_scores():
    """``decide``: the best mean among the blends whose popularity share is at most co-occurrence alone's."""
    from animerec.taste.choice import decide, key

    rng = np.random.default_rng(0)
    base = rng.random((5, 200)) * 0.1
    settings = {key(w): w for w in ({"cooc": 1.0}, {"content": 0.1}, {"cooc": 1.0, "content": 0.1})}
    table = {key({"cooc": 1.0}): base, key({"content": 0.1}): base + 0.2, key({"cooc": 1.0, "content": 0.1}): base + 0.1}
    shares = {key({"cooc": 1.0}): 0.6, key({"content": 0.1}): 0.9, key({"cooc": 1.0, "content": 0.1}): 0.5}
    weights, report = decide(table, settings, 0, shares)
    assert weights == {"cooc": 1.0, "content": 0.1} and report["popularity_share"] == shares
    weights, _ = decide(table, settings, 0)  # without shares: the most hits
    assert weights == {"content": 0.1}


def test_popularity_share_and_similarities_in_zero_to_one():
    from animerec.evaluation import popularity_share

    counts = np.array([50, 40, 30, 20, 10, 5])
    assert popularity_share(lambda q, ex, n: np.argsort(-counts)[:n], counts, queries=3, head=2, k=2) == 1.0
    assert popularity_share(lambda q, ex, n: {"tail": np.array([4, 5]), "half": np.array([0, 5])}, counts,
                            queries=3, head=2, k=2) == {"tail": 0.0, "half": 0.5}
    lists = block_lists(10, 6)
    anime = pd.DataFrame({"anime_id": np.arange(12) + 1, "genres": ["Action"] * 6 + ["Romance"] * 6, "type": "TV",
                          "source": None, "anime_index": np.arange(12)})
    index = TasteIndex(lists, content_matrix(anime, 12), {"cooc": 1.0, "content": 0.5})
    for q in range(12):
        others = np.delete(index.similar_items(q), q)
        assert others.min() >= 0 and others.max() <= 1 + 1e-6
