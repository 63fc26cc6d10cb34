"""Folding anyone's list into a trained model: the fitted vector, the ranking head, errors, and the service."""

import numpy as np
import pytest

from animerec.bundle import ModelBundle, write_bundle
from animerec.foldin import fit_user, fold_in, person_ranking, person_scores
from animerec.profiles import AnimeList, ListError
from animerec.scoring import Scorer
from animerec.service import RecommendationService
from tests.test_recommenders import ANIME, ANIME_VECTORS, RATINGS, USER_IDS, USER_VECTORS


@pytest.fixture(scope="module", params=["plain", "biases"])
def bundle(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    arrays = {"kernel": np.array([[4.0]]), "bias": np.array([0.0])}
    if request.param == "biases":
        arrays.update(user_bias=np.array([0.1, -0.2, 0.0, 0.3, -0.1], np.float32),
                      anime_bias=np.array([0.5, 0.0, -0.5, 0.2, 0.0, -1.0], np.float32))
    write_bundle(folder, scorer_arrays=arrays, user_emb=USER_VECTORS, anime_emb=ANIME_VECTORS, activation="sigmoid",
                 user_ids=USER_IDS, anime_ids=ANIME.anime_id.to_numpy(), scale={"min": 1.0, "max": 10.0}, anime=ANIME,
                 ratings=RATINGS)
    return ModelBundle.load(folder)


def objective(scorer: Scorer, anime, target, vector, bias) -> float:
    """The fold-in's objective: the training loss plus the small penalty on the user bias."""
    from animerec.foldin import BIAS_L2

    return bce(scorer, anime, target, vector, bias) + BIAS_L2 / 2 * bias**2


def bce(scorer: Scorer, anime, target, vector, bias) -> float:
    z = scorer.anime_vectors[anime] @ vector * scorer.kernel + scorer.bias
    if scorer.user_bias is not None:
        z = z + bias + scorer.anime_bias[anime]
    p = np.clip(1 / (1 + np.exp(-z)), 1e-7, 1 - 1e-7)
    return float(-(target * np.log(p) + (1 - target) * np.log(1 - p)).mean())


def test_the_fitted_vector_minimises_the_training_loss(bundle):
    scorer = bundle.scorer
    anime, target = np.array([0, 1, 2, 3]), np.array([1.0, 0.9, 0.1, 0.2], np.float32)  # a mecha fan
    vector, bias = fit_user(scorer, anime, target, steps=400)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    fitted = objective(scorer, anime, target, vector, bias)
    angles = np.linspace(-np.pi, np.pi, 721)  # every direction in the 2-D embedding space, each with its best bias
    biases = np.linspace(-3, 3, 121) if scorer.user_bias is not None else [0.0]
    grid = min(objective(scorer, anime, target, np.array([np.cos(a), np.sin(a)]), b) for a in angles for b in biases)
    assert fitted <= grid + 1e-3, (fitted, grid)
    assert vector @ np.array([1.0, 0.0]) > vector @ np.array([0.0, 1.0])  # mecha over romance



def test_with_softplus_the_fit_minimises_the_squared_error(bundle):
    import dataclasses

    from animerec.foldin import BIAS_L2
    from animerec.scoring import _activate

    activation = "softplus"
    scorer = dataclasses.replace(bundle.scorer, activation=activation)
    anime, target = np.array([0, 1, 2, 3]), np.array([1.0, 0.9, 0.1, 0.2])

    def loss(vector, bias) -> float:
        z = scorer.anime_vectors[anime] @ vector * scorer.kernel + scorer.bias
        if scorer.user_bias is not None:
            z = z + bias + scorer.anime_bias[anime]
        return float(((_activate(z, activation) - target) ** 2).mean() / 2 + BIAS_L2 / 2 * bias**2)

    vector, bias = fit_user(scorer, anime, target, steps=600)
    biases = np.linspace(-3, 3, 121) if scorer.user_bias is not None else [0.0]
    grid = min(loss(np.array([np.cos(a), np.sin(a)]), b) for a in np.linspace(-np.pi, np.pi, 721) for b in biases)
    assert loss(vector, bias) <= grid + 1e-3, (loss(vector, bias), grid)


def test_an_unknown_activation_is_named():
    from animerec.errors import ConfigError

    scorer = Scorer(USER_VECTORS, ANIME_VECTORS, np.array([[1.0]]), np.array([0.0]), "swish")
    with pytest.raises(ConfigError, match="swish"):
        fit_user(scorer, np.array([0, 1]), np.array([0.2, 0.9]))

def test_predictions_follow_the_list_and_the_list_is_never_recommended(bundle):
    listed = AnimeList.build([30, 40, 10], [10, 9, 2], None, "a romance fan")
    person = fold_in(bundle, listed)
    predicted = bundle.to_rating(person_scores(bundle.scorer, person))
    assert predicted[2] > predicted[0]  # their romance over the mecha they panned
    service = RecommendationService(bundle)
    answer = service.answer({"kind": "rating_recs", "ratings": [{"anime_id": 30, "rating": 10},
                                                                {"anime_id": 40, "rating": 9},
                                                                {"anime_id": 10, "rating": 2}], "n": 10})
    ids = [row["anime_id"] for row in answer["anime"]]
    assert sorted(ids) == [20, 50, 60]  # everything but the list
    np.testing.assert_allclose([row["predicted_rating"] for row in answer["anime"]],
                               np.sort(predicted[[1, 4, 5]])[::-1], atol=1e-4)
    assert answer["query"]["list"] == {"source": "the ratings list", "listed": 3, "used": 3, "skipped": 0,
                                       "skipped_anime_ids": []}


def test_nothing_usable_is_a_clear_error(bundle):
    with pytest.raises(ListError, match=r"Nothing on a list can be used.*2 of its 3 anime are unknown"):
        fold_in(bundle, AnimeList.build([1, 2, 10], [9, 9, np.nan], None, "a list"))
    with pytest.raises(ListError, match="plan-to-watch and unrated entries are not a taste signal"):
        fold_in(bundle, AnimeList.build([10, 20], [9, 9], [True, True], "a list"))


def test_likes_and_similar_users_through_the_service(bundle):
    service = RecommendationService(bundle, neighbours=3)
    answer = service.answer({"kind": "similar_users", "likes": ["Mecha One", "Robots Two"], "n": 3})
    assert [row["user_id"] for row in answer["users"]] == [100, 101, 102]  # the users closest to the mecha axis
    assert [row["anime_id"] for row in answer["anime"]] == [50]  # 102's favourite; 10 and 20 are on the list
    with pytest.raises(ValueError, match="takes one of 'query' \\(a user ID\\), 'ratings', 'likes'"):
        service.answer({"kind": "rating_recs", "query": 100, "likes": ["Mecha One"]})
    with pytest.raises(ValueError, match="similar_anime query takes an anime in 'query', not 'likes'"):
        service.answer({"kind": "similar_anime", "likes": ["Mecha One"]})


def test_a_ranking_head_ranks_a_person_exactly_as_it_ranks_a_user():
    from animerec.ranking import RankerData

    data = RankerData(RATINGS, len(USER_IDS), len(ANIME), relevance_threshold=8)
    for ranker in (data.ranker(1.0, 1.0), data.ranker(1.0, 1.0, rating_weight=2.0)):  # the two knobs the rule may pick
        scorer = Scorer.from_weights(USER_VECTORS, ANIME_VECTORS, np.array([[4.0]]), np.array([0.0]), ranker=ranker)
        for user in range(len(USER_IDS)):
            rated = ranker.history[user].indices
            ratings = data.ratings[user].data  # the same order as rated
            person = type("P", (), {"rated": rated, "ratings": ratings})()  # the user's own list
            np.testing.assert_allclose(person_ranking(scorer, person), ranker.rank_users([user])[0], rtol=1e-5)


def test_a_dropped_anime_is_like_any_other_entry():
    from animerec.profiles import from_records
    from animerec.ranking import RankerData

    ranker = RankerData(RATINGS, len(USER_IDS), len(ANIME), relevance_threshold=8).ranker(1.0, 0.0)
    scorer = Scorer.from_weights(USER_VECTORS, ANIME_VECTORS, 4.0, 0.0, ranker=ranker)
    listed = from_records([{"anime_id": 10, "rating": 9}, {"anime_id": 30, "dropped": True},
                           {"anime_id": 40, "rating": 6, "dropped": True}], "a list")
    assert list(listed.dropped) == [False, True, True]

    class Bundle:  # what fold_in reads
        anime_ids, scale = ANIME.anime_id.to_numpy(), {"min": 1.0, "max": 10.0}

    Bundle.scorer = scorer
    person = fold_in(Bundle, listed)
    assert sorted(person.rated) == [0, 3] and sorted(person.ratings) == [6.0, 9.0]  # the unscored drop is only listed
    assert 2 in person.listed
    np.testing.assert_allclose(person_ranking(scorer, person), ranker.fold_in(np.array([0, 3])), rtol=1e-6)
