"""The seed architecture, the learning-rate schedule, config validation, save/load, the numpy scorer."""


import keras
import numpy as np
import pytest

from animerec.config import LRConfig
from animerec.errors import ConfigError
from animerec.model import build_model, learning_rate, scorer_from_model
from animerec.pipeline import compose_config
from tests.conftest import PROJECT_ROOT, model_config

SEED_LR = LRConfig(schedule="rampup_decay", start_lr=1e-5, min_lr=1e-5, max_lr=5e-5, rampup_epochs=5,
                   sustain_epochs=0, exp_decay=0.8)


def cfg(**changes):
    return model_config(**{"lr": SEED_LR.model_dump(), **changes})


def test_architecture_layer_by_layer():
    model = build_model(cfg(), num_users=50, num_anime=40)
    layers = keras.layers
    expected = [(layers.Embedding, "user_embedding"), (layers.Embedding, "anime_embedding"),
                (layers.Dot, "dot_product"), (layers.Flatten, "flatten"), (layers.Dense, "dense")]
    assert [layer.name for layer in model.layers] == [name for _, name in expected]
    assert all(isinstance(layer, kind) for layer, (kind, _) in zip(model.layers, expected))
    assert model.user_embedding.embeddings.shape == (50, 128)
    assert model.anime_embedding.embeddings.shape == (40, 128)
    assert model.dot.normalize is True
    assert model.dense.units == 1 and model.dense.activation.__name__ == "sigmoid"
    assert type(model.user_embedding.embeddings_initializer).__name__ == "HeNormal"
    out = model({"user": np.array([0, 1]), "anime": np.array([2, 3])})
    assert out.shape == (2, 1) and np.all((0 < out.numpy()) & (out.numpy() < 1))
    # two L2 penalties: the looked-up embedding rows' (test_trainer.py checks its gradient row by row) and the
    # Dense kernel's regularizer; nothing on whole tables
    assert len(model.losses) == 2
    kernel = model.dense.get_weights()[0]
    assert float(model.losses[1]) == pytest.approx(1e-6 * float((kernel ** 2).sum()), rel=1e-5)


def test_cosine_is_what_the_dense_unit_sees():
    model = build_model(cfg(embedding_size=4), 3, 3)
    u, a = model.user_embedding.embeddings.numpy()[1], model.anime_embedding.embeddings.numpy()[2]
    cos = u @ a / np.linalg.norm(u) / np.linalg.norm(a)
    w, b = model.dense.get_weights()
    expected = 1 / (1 + np.exp(-(cos * w[0, 0] + b[0])))
    got = model({"user": np.array([1]), "anime": np.array([2])}).numpy()[0, 0]
    assert got == pytest.approx(expected, rel=1e-5)


def test_seed_learning_rate_schedule_values():
    lr = [learning_rate(e, SEED_LR) for e in range(9)]
    assert lr[0] == pytest.approx(1e-5)
    assert lr[1] == pytest.approx(1e-5 + (5e-5 - 1e-5) / 5)
    assert lr[4] == pytest.approx(1e-5 + 4 * (5e-5 - 1e-5) / 5)
    assert lr[5] == pytest.approx(5e-5)  # the peak, then exponential decay toward min_lr
    assert lr[6] == pytest.approx((5e-5 - 1e-5) * 0.8 + 1e-5)
    assert lr[8] == pytest.approx((5e-5 - 1e-5) * 0.8 ** 3 + 1e-5)
    sustained = SEED_LR.model_copy(update=dict(sustain_epochs=2))
    assert learning_rate(6, sustained) == pytest.approx(5e-5)
    assert learning_rate(7, sustained) == pytest.approx(5e-5)
    assert learning_rate(8, sustained) == pytest.approx((5e-5 - 1e-5) * 0.8 + 1e-5)


def test_other_schedules():
    cosine = SEED_LR.model_copy(update=dict(schedule="cosine"))
    assert learning_rate(0, cosine, epochs=11) == pytest.approx(5e-5)
    assert learning_rate(5, cosine, epochs=11) == pytest.approx((5e-5 + 1e-5) / 2)
    assert learning_rate(10, cosine, epochs=11) == pytest.approx(1e-5)
    assert learning_rate(3, SEED_LR.model_copy(update=dict(schedule="constant"))) == pytest.approx(5e-5)


@pytest.mark.parametrize("override, message", [
    ("model.kernel_initializer=he_nromal", r"model.kernel_initializer='he_nromal': Input should be 'he_normal'"),
    ("model.embedding_size=0", r"model.embedding_size=0: Input should be greater than or equal to 1"),
    ("model.activation=softmaxx", r"model.activation='softmaxx': Input should be 'sigmoid'"),
    ("model.loss=hinge", r"model.loss='hinge': Input should be 'binary_crossentropy'"),
    ("model.lr.schedule=warmup", r"model.lr.schedule='warmup': Input should be 'rampup_decay'"),
    ("model.lr.min_lr=1e-2", r"model.lr.min_lr=0.01 is above model.lr.max_lr=0.005"),
])
def test_bad_config_is_rejected_before_training(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config([override], PROJECT_ROOT)


def test_pair_scores_are_the_same_in_chunks():
    from animerec.scoring import Scorer

    rng = np.random.default_rng(3)
    scorer = Scorer.from_weights(rng.normal(size=(9, 4)), rng.normal(size=(7, 4)), [[1.7]], [0.2],
                                 user_bias=rng.normal(size=9), anime_bias=rng.normal(size=7))
    users, anime = rng.integers(0, 9, 50), rng.integers(0, 7, 50)
    whole = scorer.score_pairs(users, anime, chunk=1000)
    np.testing.assert_allclose(scorer.score_pairs(users, anime, chunk=7), whole, rtol=1e-6)
    np.testing.assert_allclose(whole, scorer.score_users(users)[np.arange(50), anime], rtol=1e-5)
    assert scorer.score_pairs(users[:0], anime[:0]).shape == (0,)


def test_save_load_predict_round_trip(tmp_path):
    model = build_model(cfg(embedding_size=8, use_bias=True), 20, 15)
    model.user_bias.embeddings.assign(np.linspace(-1, 1, 20)[:, None].astype("float32"))
    pairs = {"user": np.arange(10), "anime": np.arange(10) % 15}
    before = model.predict(pairs, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(pairs, verbose=0), before, rtol=1e-6)
    assert loaded.get_config()["use_bias"] is True
    # the numpy scorer computes the same numbers, pairwise and for all anime at once
    scorer = scorer_from_model(loaded)
    np.testing.assert_allclose(scorer.score_pairs(pairs["user"], pairs["anime"]), before.ravel(), rtol=1e-5)
    full = scorer.score_users(np.array([3]))
    assert full.shape == (1, 15)
    assert full[0, 3] == pytest.approx(before[3, 0], rel=1e-5)
