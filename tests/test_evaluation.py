"""Exact values of the evaluation metrics on hand-built splits (animerec/evaluation.py)."""

import numpy as np
import pytest

from animerec.evaluation import (
    Interactions,
    paired_interval,
    ranking_metrics,
    similar_item_metrics,
    similar_user_metrics,
)


def rows(*triples):
    user, anime, rating = zip(*triples)
    return Interactions(np.array(user, np.int32), np.array(anime, np.int32), np.array(rating, np.float32))


def test_ndcg_and_recall_at_k_match_hand_computed_values():
    # 2 users, 6 anime; user 0 knows anime 0, its relevant test anime are 2 and 4 (5 is rated 6: not relevant)
    known = rows((0, 0, 9), (1, 1, 9))
    test = rows((0, 2, 8), (0, 4, 10), (0, 5, 6), (1, 3, 9))
    scores = np.array([[9, 0, 5, 0, 1, 4],    # user 0's ranking (anime 0 is known): 2, 5, 4
                       [0, 9, 1, 2, 3, 0]], np.float32)  # user 1's (anime 1 known): 4, 3, 2
    found = ranking_metrics(lambda users: scores[users], known, test, k=3, relevance_threshold=8)
    dcg0 = 1 / np.log2(2) + 1 / np.log2(4)  # hits at ranks 1 and 3
    idcg0 = 1 / np.log2(2) + 1 / np.log2(3)
    dcg1, idcg1 = 1 / np.log2(3), 1.0  # its one relevant anime at rank 2
    assert found["ndcg_at_3"] == pytest.approx((dcg0 / idcg0 + dcg1 / idcg1) / 2)
    assert found["recall_at_3"] == pytest.approx((2 / 2 + 1 / 1) / 2)
    from sklearn.metrics import ndcg_score  # a second reference for user 0 (candidates only)

    relevance = np.array([[0, 1, 0, 1, 0]])  # anime 1..5 for user 0: 2 and 4 relevant
    assert ndcg_score(relevance, scores[:1, 1:], k=3) == pytest.approx(dcg0 / idcg0)


def test_similar_item_hit_at_k_by_hand():
    history = rows((0, 0, 9), (0, 1, 5), (1, 0, 9), (1, 3, 10))
    target = rows((0, 2, 9), (0, 3, 8), (1, 2, 8), (1, 4, 3))
    neighbours = {0: [3, 2, 1, 4], 3: [2, 4, 0, 1]}

    def similar(q, exclude, k):
        return [a for a in neighbours[q] if a not in exclude][:k]

    found = similar_item_metrics(similar, history, target, k=1, relevance_threshold=8, queries=3)
    # user 0 (history 0, 1; liked 0) asks 0: top-1 is 3, liked in test -> 1/min(1, 2) = 1
    # user 1 (history 0, 3; liked both) asks 0 -> 2 (liked: 1), asks 3 -> 2 (liked: 1): mean 1
    assert found["hit_at_1"] == 1.0 and found["users_evaluated"] == 2
    found = similar_item_metrics(similar, history, target, k=2, relevance_threshold=8, excluded=np.array([2]))
    # anime 2 is out: user 0's relevant is {3}: 0 -> [3, 4]: 1/1; user 1's relevant {} -> not evaluated
    assert found["hit_at_2"] == 1.0 and found["users_evaluated"] == 1
    several = similar_item_metrics(lambda q, ex, k: {"good": similar(q, ex, k), "bad": [4]}, history, target, k=1)
    assert several["good"]["hit_at_1"] == 1.0 and several["bad"]["hit_at_1"] == 0.0
    assert list(several["good"]["per_user"]) == [1.0, 1.0]


def test_similar_user_recall_at_k_by_hand():
    # users 1 and 2 liked anime 5; user 2 also liked 6; user 3 liked 7
    history = rows((0, 0, 9), (1, 0, 9), (1, 5, 9), (2, 5, 8), (2, 6, 9), (3, 7, 10), (3, 0, 2))
    target = rows((0, 5, 9), (0, 7, 9))
    found = similar_user_metrics(lambda u, n: [1, 2][:n], history, target, 8, k=1, num_neighbours=2,
                                 relevance_threshold=8)
    # votes: 5 twice, 6 once (0 is user 0's history): top-1 = 5, relevant {5, 7}: 1 / min(1, 2)
    assert found["recall_at_1"] == 1.0
    found = similar_user_metrics(lambda u, n: [3], history, target, 8, k=2, num_neighbours=1, relevance_threshold=8)
    assert found["recall_at_2"] == 0.5  # user 3 liked only 7 (its 2 for anime 0 is no like): 1 hit of 2


def test_paired_interval_brackets_the_mean_difference():
    a = np.array([0.5, 0.6, 0.7, 0.8])
    mean, low, high = paired_interval(a, a - 0.1)
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.1) and high == pytest.approx(0.1)
    mean, low, high = paired_interval(np.array([1.0, 0.0, 1.0, 0.0]), np.zeros(4), resamples=500)
    assert mean == 0.5 and 0.0 <= low < 0.5 < high <= 1.0
