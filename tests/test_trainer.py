"""The lazy trainer: same loss as plain fit, only touched rows change, learns the demo structure."""

import numpy as np
import pytest

from animerec.evaluation import Interactions, ranking_metrics
from animerec.model import build_model, scorer_from_model
from animerec.trainer import fit
from animerec.training.input_pipeline import make_dataset
from animerec.training.lazy_adam import LazyAdam
from animerec.training.loops import LazyTrainer
from animerec.training.sampling import TrainData
from tests.conftest import model_config, replaced


def toy(n=6000, users=200, anime=80, seed=0):
    """Users and anime in two taste groups: in-group pairs rate high, cross-group low."""
    rng = np.random.default_rng(seed)
    u, a = rng.integers(0, users, n), rng.integers(0, anime, n)
    same = (u % 2) == (a % 2)
    target = np.clip(np.where(same, 0.85, 0.2) + rng.normal(0, 0.05, n), 0, 1).astype(np.float32)
    return TrainData(u, a, target)


def small_cfg(**changes):
    return model_config(**{"embedding_size": 16, "batch_size": 256, "epochs": 6, "patience": 3,
                           "lr": {"schedule": "constant", "min_lr": 0.02, "max_lr": 0.02}, **changes})


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


def _dense_gradients(model, loss_name, features, target):
    """The trainer's objective, differentiated with every gradient made dense (duplicate rows summed by TF)."""
    import tensorflow as tf

    from animerec.training.loops import _loss_fn, per_example_loss

    with tf.GradientTape() as tape:
        data = tf.reduce_mean(per_example_loss(_loss_fn(loss_name), model(features, training=True), target))
        total = data + tf.add_n(model.losses)
    return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(total, model.trainable_variables)]


def test_lazy_adam_matches_a_dense_reference_over_several_steps():
    """Several steps with duplicate indices and L2 > 0: the lazy trainer equals a numpy reference that
    runs Adam on dense gradients, updating only the rows each batch looks up. Rows outside a batch stay
    bit-identical although their moments are non-zero (dense Adam would move them)."""
    import keras

    keras.utils.set_random_seed(0)
    config = small_cfg(l2=0.05, embedding_size=4)
    lazy_model, ref_model = build_model(config, 6, 5), build_model(config, 6, 5)
    ref_model.set_weights(lazy_model.get_weights())
    trainer = LazyTrainer(lazy_model, "binary_crossentropy")
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    trainer.set_learning_rate(lr)
    names = [v.path for v in ref_model.trainable_variables]
    m = {n: np.zeros(v.shape, np.float32) for n, v in zip(names, ref_model.trainable_variables)}
    s = {n: np.zeros(v.shape, np.float32) for n, v in zip(names, ref_model.trainable_variables)}
    batches = [([0, 0, 2, 2, 2], [1, 1, 3, 0, 1]), ([1, 1, 0], [4, 4, 2]), ([3, 5, 5], [0, 2, 2]), ([4, 4], [3, 3])]
    for step, (users, anime) in enumerate(batches, start=1):
        features = {"user": np.array(users, np.int32), "anime": np.array(anime, np.int32)}
        target = np.linspace(0.1, 0.9, len(users)).astype(np.float32)
        before = lazy_model.user_embedding.get_weights()[0].copy()
        trainer.train_step((features, target))
        # reference: dense gradients, Adam applied to the looked-up rows only (all of a dense variable)
        grads = _dense_gradients(ref_model, "binary_crossentropy", features, target)
        alpha = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        touched = {"user_embedding": np.unique(users), "anime_embedding": np.unique(anime)}
        for var, name, grad in zip(ref_model.trainable_variables, names, grads):
            rows = next((r for key, r in touched.items() if key in name), slice(None))
            m[name][rows] = b1 * m[name][rows] + (1 - b1) * grad[rows]
            s[name][rows] = b2 * s[name][rows] + (1 - b2) * grad[rows] ** 2
            value = var.numpy()
            value[rows] -= alpha * m[name][rows] / (np.sqrt(s[name][rows]) + eps)
            var.assign(value)
        for got, want in zip(lazy_model.get_weights(), ref_model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)
        after = lazy_model.user_embedding.get_weights()[0]
        idle = np.setdiff1d(np.arange(6), users)
        user_moments = m[next(n for n in names if "user_embedding" in n)]
        np.testing.assert_array_equal(after[idle], before[idle])
        if step >= 2:  # e.g. users 0 and 2 of step 1 sit out step 2 with their moments set
            assert np.any(user_moments[idle] != 0), "rows with non-zero moments should sit outside this batch"


def test_l2_penalty_acts_only_on_looked_up_rows():
    """The L2 term adds 2 * l2 * count * row / batch to exactly the rows a batch looks up, and nothing elsewhere."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    l2 = 0.1
    with_l2, without = build_model(small_cfg(l2=l2, embedding_size=4), 6, 5), build_model(small_cfg(l2=0.0, embedding_size=4), 6, 5)
    without.set_weights(with_l2.get_weights()[:2] + with_l2.get_weights()[2:])
    users, anime = np.array([0, 0, 3]), np.array([1, 2, 2])
    features, target = {"user": users, "anime": anime}, np.array([0.2, 0.5, 0.9], np.float32)

    def user_grad(model):
        with tf.GradientTape() as tape:
            out = keras.losses.binary_crossentropy(target[:, None], model(features, training=True))
            total = tf.reduce_mean(out) + (tf.add_n(model.losses) if model.losses else 0.0)
        grad = tape.gradient(total, model.user_embedding.trainable_variables[0])
        assert isinstance(grad, tf.IndexedSlices)  # sparse: the trainer pays only for these rows
        return tf.convert_to_tensor(grad).numpy()

    difference = user_grad(with_l2) - user_grad(without)
    table = with_l2.user_embedding.get_weights()[0]
    expected = np.zeros_like(table)
    for user, count in zip(*np.unique(users, return_counts=True)):
        expected[user] = 2 * l2 * count * table[user] / len(users)
    np.testing.assert_allclose(difference, expected, rtol=1e-4, atol=1e-7)
    assert np.all(difference[[1, 2, 4, 5]] == 0)


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
    rng = np.random.default_rng(0)
    rand = ranking_metrics(lambda users: rng.random((len(users), 80), dtype=np.float32), as_inter(train), as_inter(test),
                           k=10)
    assert good["ndcg_at_10"] > 2 * rand["ndcg_at_10"], (good, rand)


def test_recall_is_hits_over_min_k_and_relevant_and_known_anime_are_not_candidates():
    # user 0: 12 relevant test anime (more than k); user 1: 2 relevant. Scores rank anime by index.
    from animerec.evaluation import Interactions, ranking_metrics

    num_anime = 40
    known = Interactions(np.array([0, 1]), np.array([0, 1]), np.array([9.0, 9.0], np.float32))
    test_anime = [np.arange(2, 14), np.array([0 + 3, 30])]
    test = Interactions(np.repeat([0, 1], [12, 2]), np.concatenate(test_anime), np.full(14, 9.0, np.float32))

    def score(users):
        return np.tile(-np.arange(num_anime, dtype=np.float32), (len(users), 1))  # anime 0 first

    metrics = ranking_metrics(score, known, test, k=10)
    # user 0: anime 0 is known, so the top 10 are 1..10: hits 2..10 = 9, recall 9 / min(10, 12)
    # user 1: anime 1 is known, top 10 are 0, 2..10: hit anime 3 only, recall 1 / min(10, 2)
    assert metrics["recall_at_10"] == pytest.approx((9 / 10 + 1 / 2) / 2)


def test_a_failing_extra_after_training_keeps_the_model(trained, tmp_path, monkeypatch, caplog):
    """Plots and the best alias are extras: when they fail, the model artifact is still stored."""
    import importlib
    import json
    import shutil

    from animerec.artifacts import ArtifactStore
    from animerec.steps import STEPS

    train_step = importlib.import_module("animerec.steps.train")  # the module (animerec.steps.train is the function)

    cfg, _, _ = trained
    shutil.copytree(cfg.main.artifact_root, tmp_path / "store")  # the shared store stays as it is
    cfg = replaced(cfg, main={"artifact_root": str(tmp_path / "store")})
    store = ArtifactStore(cfg.main.artifact_root)
    before = store.versions("model")

    def broken(*_args, **_kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(train_step, "plot_history", broken)
    monkeypatch.setattr(train_step, "publish", broken)
    result = STEPS["train"](replaced(cfg, model={"epochs": 1}))
    after = store.versions("model")
    assert len(after) == len(before) + 1 and result["model"] == f"model:v{after[-1]}"
    version = store.resolve(result["model"])
    assert not (version.path / "loss_curve.png").exists()
    assert json.loads(version.file("metrics.json").read_text())["epochs_run"] == 1
    assert "Could not write the loss-curve plot (RuntimeError: no display)" in caplog.text


def test_interactions_group_by_user_like_a_loop():
    from animerec.evaluation import Interactions

    rng = np.random.default_rng(4)
    user, anime = rng.integers(0, 30, 400).astype(np.int32), rng.integers(0, 50, 400).astype(np.int32)
    split = Interactions(user, anime, np.ones(400, np.float32))
    for u in range(-1, 32):  # users without rows (and out of range) have nothing
        np.testing.assert_array_equal(split.items_of(u), anime[user == u])
    both = Interactions.concat(split, Interactions(np.array([31], np.int32), np.array([7], np.int32),
                                                   np.array([9.0], np.float32)))
    assert len(both) == 401 and both.items_of(31).tolist() == [7]


def test_input_pipeline_has_fixed_parallelism():
    """No tf.data autotuning (it stalled every other epoch on 2 cores); 2 to 4 batches made at once."""
    from animerec.training.input_pipeline import input_parallelism

    data = TrainData(np.arange(10), np.arange(10), np.ones(10, np.float32))
    assert make_dataset(data, 4, shuffle=True, seed=0).options().autotune.enabled is False
    assert [input_parallelism(c) for c in (1, 2, 8, 16, 64)] == [2, 2, 2, 4, 4]


def test_early_stopping_counts_only_falls_of_min_delta_of_the_best():
    from animerec.trainer import improved

    assert improved(0.9, float("inf"), 0.5)  # the first epoch is always the best so far
    assert improved(0.989, 1.0, 1e-2) and not improved(0.991, 1.0, 1e-2) and improved(0.999, 1.0, 0.0)
    train, valid = toy(seed=0), toy(n=1500, seed=1)
    for trainer in ("lazy", "keras"):
        # a fall of half the loss never happens after the first epoch: it stops after patience epochs, keeps epoch 1
        cfg = small_cfg(patience=2, min_delta=0.5)
        history = fit(build_model(cfg, 200, 80), train, valid, cfg, trainer=trainer, verbose=0)
        assert len(history.epochs) == 3 and history.best_epoch == 1, trainer
        falls = small_cfg(patience=2, min_delta=0.0)  # any fall counts: this toy keeps improving for 6 epochs
        assert len(fit(build_model(falls, 200, 80), train, valid, falls, trainer=trainer, verbose=0).epochs) > 3


def test_large_data_trains_with_bigger_batches_over_fewer_epochs():
    """max_steps_per_epoch grows the batch, max_train_ratings caps the epochs; the cosine schedule spans those."""
    from animerec.trainer import scaled_to

    cfg = small_cfg(epochs=10, max_steps_per_epoch=4, max_train_ratings=3 * 6000 + 5,
                    lr={"schedule": "cosine", "min_lr": 1e-3, "max_lr": 0.02})
    assert (scaled_to(cfg, 500).epochs, scaled_to(cfg, 500).batch_size) == (10, 256)  # small data: as configured
    assert scaled_to(cfg, 10**9).epochs == 1  # at least one epoch, however large
    model = build_model(cfg, 200, 80)
    history = fit(model, toy(n=6000), toy(n=1500, seed=1), cfg, verbose=0)
    assert (history.batch_size, history.planned_epochs) == (1500, 3)
    assert len(history.epochs) == 3
    assert [round(r["lr"], 6) for r in history.epochs] == [0.02, round(0.001 + 0.5 * 0.019, 6), 0.001]


def test_a_dataset_frees_its_row_order_when_it_is_gone():
    """TensorFlow keeps every numpy function of a tf.data pipeline for good: the row order must not live in it."""
    import gc
    import weakref

    dataset = make_dataset(toy(n=100), 32, shuffle=True, seed=0)
    assert sum(len(batch[1]) for batch in dataset) == 100  # every row, once
    rows = weakref.ref(dataset._animerec_rows)
    del dataset
    gc.collect()
    assert rows() is None


def test_the_train_step_stores_a_preference_head_that_ranks_as_the_network(config_factory):
    """``model.negatives_per_positive`` > 0 with biases: the stored model keeps the preference head, and the
    served scorer ranks every anime as the trained network's preference logit does."""
    import keras

    from animerec.artifacts import ArtifactStore
    from animerec.bundle import ModelBundle
    from animerec.steps import STEPS
    from tests.conftest import TINY_DEMO

    cfg = config_factory(*TINY_DEMO, "model.negatives_per_positive=2", "model.use_bias=true", "model.epochs=2",
                         "model.embedding_size=8", "train.verbose=0")
    for step in ("download", "preprocess", "train"):
        STEPS[step](cfg)
    folder = ArtifactStore(cfg.main.artifact_root).resolve("model:latest").path
    bundle = ModelBundle.load(folder)
    assert bundle.scorer.preference_bias is not None and bundle.scorer.ranks_separately
    model = keras.models.load_model(folder / "model.keras")
    users = np.array([0, 3])
    network = model.predict({"user": np.repeat(users, len(bundle.anime_ids)),
                             "anime": np.tile(np.arange(len(bundle.anime_ids)), len(users))}, verbose=0)[:, 1]
    network = network.reshape(len(users), -1)
    top = np.argsort(-bundle.scorer.rank_users(users), axis=1)[:, :10]
    tenth = np.sort(network, axis=1)[:, -10:-9]  # the network's own 10th best logit, per user
    assert (np.take_along_axis(network, top, axis=1) >= tenth - 1e-5).all()  # the same ten, up to float ties
