"""The lazy trainer: same loss as plain fit, only touched rows change, learns the demo structure."""

import numpy as np
import pytest

from animerec.evaluation import Interactions, random_scorer, ranking_metrics
from animerec.model import build_model, scorer_from_model
from animerec.trainer import LazyAdam, LazyTrainer, TrainData, fit, make_dataset
from tests.test_model import cfg


def toy(n=6000, users=200, anime=80, seed=0):
    """Users and anime in two taste groups: in-group pairs rate high, cross-group low."""
    rng = np.random.default_rng(seed)
    u, a = rng.integers(0, users, n), rng.integers(0, anime, n)
    same = (u % 2) == (a % 2)
    target = np.clip(np.where(same, 0.85, 0.2) + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
    return TrainData(u, a, target)


def small_cfg(**changes):
    settings = {"embedding_size": 16, "batch_size": 256, "epochs": 6, "patience": 3,
                "lr": {"schedule": "constant", "min_lr": 0.02, "max_lr": 0.02}}
    settings.update(changes)
    return cfg(**settings)


def test_lazy_and_fit_reach_comparable_loss():
    import keras

    train, valid = toy(seed=0), toy(n=1500, seed=1)
    finals = {}
    for trainer in ("lazy", "keras"):
        keras.utils.set_random_seed(3)
        model = build_model(small_cfg(), 200, 80)
        history = fit(model, train, valid, small_cfg(), trainer=trainer, verbose=0)
        finals[trainer] = min(r["val_loss"] for r in history.epochs)
    start = 0.6931  # the loss of a model that has learned nothing
    assert finals["lazy"] < start - 0.1 and finals["keras"] < start - 0.1
    assert abs(finals["lazy"] - finals["keras"]) < 0.05, finals


def test_lazy_adam_touches_only_batch_rows():
    model = build_model(small_cfg(l2=0.0), 200, 80)
    trainer = LazyTrainer(model, "binary_crossentropy")
    before = model.user_embedding.get_weights()[0].copy()
    batch = TrainData(np.array([3, 3, 7]), np.array([1, 2, 3]), np.array([1.0, 0.0, 1.0], np.float32))
    trainer.train_epoch(make_dataset(batch, 8, shuffle=False, seed=0), lambda *_: None)
    after = model.user_embedding.get_weights()[0]
    changed = np.where(np.any(before != after, axis=1))[0]
    assert changed.tolist() == [3, 7]


def test_lazy_adam_matches_dense_adam_on_touched_rows():
    """One step on a dense variable equals Keras' Adam to float precision."""
    import keras
    import tensorflow as tf

    var_a = tf.Variable(np.ones((4, 3), np.float32))
    var_b = keras.Variable(np.ones((4, 3), np.float32))
    grad = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    lazy = LazyAdam(learning_rate=0.01)
    lazy.build([var_a])
    ref = keras.optimizers.Adam(learning_rate=0.01)
    for _ in range(3):
        lazy.apply([tf.constant(grad)], [var_a])
        ref.apply_gradients([(tf.constant(grad), var_b)])
    np.testing.assert_allclose(var_a.numpy(), var_b.numpy(), rtol=1e-5)
    # and the sparse path gives the same numbers for a gradient that covers every row
    var_c = tf.Variable(np.ones((4, 3), np.float32))
    sparse = LazyAdam(learning_rate=0.01)
    sparse.build([var_c])
    for _ in range(3):
        sparse.apply([tf.IndexedSlices(tf.constant(grad), tf.constant([0, 1, 2, 3]))], [var_c])
    np.testing.assert_allclose(var_c.numpy(), var_b.numpy(), rtol=1e-5)


def test_empty_training_split_is_refused():
    model = build_model(small_cfg(), 5, 5)
    empty = TrainData(np.array([], int), np.array([], int), np.array([], np.float32))
    with pytest.raises(ValueError, match="training split is empty"):
        fit(model, empty, None, small_cfg())


def test_trained_model_ranks_far_better_than_random():
    import keras

    keras.utils.set_random_seed(0)
    train, test = toy(n=12000, seed=0), toy(n=3000, seed=5)
    model = build_model(small_cfg(epochs=8), 200, 80)
    fit(model, train, None, small_cfg(epochs=8), verbose=0)
    scorer = scorer_from_model(model)
    as_inter = lambda d: Interactions(d.user, d.anime, d.target * 9 + 1)
    good = ranking_metrics(scorer.score_users, as_inter(train), as_inter(test), k=10)
    rand = ranking_metrics(random_scorer(80), as_inter(train), as_inter(test), k=10)
    assert good["ndcg_at_10"] > 2 * rand["ndcg_at_10"], (good, rand)
