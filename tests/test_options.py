"""Model options beyond the seed: biases, sampled negatives, initializers, schedules, presets, sweeps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from animerec.errors import ConfigError
from animerec.model import build_model, scorer_from_model
from animerec.pipeline import compose_config
from animerec.trainer import fit
from animerec.training.input_pipeline import make_dataset
from animerec.training.sampling import NegativeSampler, train_data
from tests.conftest import PROJECT_ROOT


def taste_frame(num_users=60, num_anime=40, per_user=15, seed=0) -> pd.DataFrame:
    """Users who like one of two halves of the catalogue, and rate it higher."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(num_users):
        side = user % 2
        liked = np.arange(num_anime)[np.arange(num_anime) % 2 == side]
        picks = rng.choice(liked, per_user - 3, replace=False).tolist() + rng.choice(num_anime, 3, replace=False).tolist()
        for anime in dict.fromkeys(picks):
            rating = 9 if anime % 2 == side else 3
            rows.append((user, anime, rating))
    frame = pd.DataFrame(rows, columns=["user_index", "anime_index", "rating"])
    frame["rating_scaled"] = ((frame.rating - 1) / 9).astype(np.float32)
    return frame


def model_cfg(*overrides: str) -> dict:
    return compose_config([*overrides, "model.embedding_size=8", "model.batch_size=128", "model.epochs=6",
                           "model.patience=6"], PROJECT_ROOT).model


OPTIONS = {
    "seed": (),
    "bias terms": ("model.use_bias=true",),
    "sampled negatives": ("model.negatives_per_positive=3",),
    "glorot_uniform, cosine": ("model.kernel_initializer=glorot_uniform", "model.lr.schedule=cosine"),
    "constant lr": ("model.lr.schedule=constant", "model.lr.max_lr=0.01"),
    "best preset": ("model=best",),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_option_trains_on_a_small_seeded_set(name):
    frame = taste_frame()
    cfg = model_cfg(*OPTIONS[name])
    keras.utils.set_random_seed(1)
    model = build_model(cfg, 60, 40)
    history = fit(model, train_data(frame, cfg, 40, seed=1), None, cfg, verbose=0)
    losses = [row["loss"] for row in history.epochs]
    assert losses[-1] < losses[0], losses
    scorer = scorer_from_model(model)
    ranks = scorer.rank_users(np.arange(60))
    assert ranks.shape == (60, 40) and np.isfinite(ranks).all()
    # the network and the numpy scorer agree on the rating head, whichever options are on
    users, anime = frame.user_index.to_numpy()[:50], frame.anime_index.to_numpy()[:50]
    keras_rating = model.predict({"user": users, "anime": anime}, verbose=0)[:, 0]
    np.testing.assert_allclose(scorer.score_pairs(users, anime), keras_rating, rtol=1e-4, atol=1e-5)


def _demo_splits(trained):
    from animerec.artifacts import ArtifactStore

    cfg, _, _ = trained
    pre = ArtifactStore(cfg.main.artifact_root).resolve("preprocessed:latest")
    frames = {name: pd.read_parquet(pre.file(f"{name}.parquet")) for name in ("train", "valid", "test")}
    with np.load(pre.file("encoders.npz")) as encoders:
        return frames, len(encoders["user_ids"]), len(encoders["anime_ids"])


def _ranking(frames, num_users, num_anime, *overrides):
    from animerec.evaluation import Interactions, ranking_metrics

    cfg = compose_config([*overrides, "model.embedding_size=32", "model.batch_size=1024", "model.epochs=8",
                          "model.lr.schedule=constant", "model.lr.max_lr=0.01"], PROJECT_ROOT).model
    keras.utils.set_random_seed(0)
    model = build_model(cfg, num_users, num_anime)
    fit(model, train_data(frames["train"], cfg, num_anime, 0, known=(frames["valid"],)), None, cfg, verbose=0)
    known = Interactions.from_frame(pd.concat([frames["train"], frames["valid"]]))
    return ranking_metrics(scorer_from_model(model).rank_users, known, Interactions.from_frame(frames["test"]))


def test_sampled_negatives_raise_ranking_quality_on_demo_data(trained):
    """What negatives are for: the same model ranks the held-out favourites far better with them."""
    frames, num_users, num_anime = _demo_splits(trained)
    plain = _ranking(frames, num_users, num_anime, "model.use_bias=true")
    negatives = _ranking(frames, num_users, num_anime, "model.use_bias=true", "model.negatives_per_positive=4")
    assert negatives["ndcg_at_10"] > 1.5 * plain["ndcg_at_10"], (plain, negatives)
    assert negatives["recall_at_10"] > 1.5 * plain["recall_at_10"], (plain, negatives)


@pytest.mark.parametrize("schedule", ["rampup_decay", "cosine", "constant"])
def test_learning_rate_schedule_is_the_one_applied(schedule):
    from animerec.model import learning_rate

    cfg = model_cfg(f"model.lr.schedule={schedule}")
    model = build_model(cfg, 60, 40)
    history = fit(model, train_data(taste_frame(), cfg, 40, seed=0), None, cfg, verbose=0)
    applied = [row["lr"] for row in history.epochs]
    assert applied == [learning_rate(epoch, cfg.lr, cfg.epochs) for epoch in range(len(applied))]
    assert len(set(applied)) == (1 if schedule == "constant" else len(applied))


@pytest.mark.parametrize("name, cls", [("glorot_uniform", "GlorotUniform"), ("lecun_normal", "LecunNormal")])
def test_kernel_initializer_reaches_every_layer(name, cls):
    model = build_model(model_cfg(f"model.kernel_initializer={name}"), 60, 40)
    for layer in (model.user_embedding, model.anime_embedding):
        assert type(layer.embeddings_initializer).__name__ == cls
    assert type(model.dense.kernel_initializer).__name__ == cls


def test_negative_sampler_never_returns_a_rated_anime():
    rng = np.random.default_rng(3)
    num_anime = 30
    # user 0 rated all but two anime, user 1 about half, user 2 one
    pairs = [(0, a) for a in range(num_anime) if a not in (4, 17)]
    pairs += [(1, a) for a in rng.choice(num_anime, 15, replace=False)] + [(2, 5)]
    user, anime = np.array(pairs).T
    sampler = NegativeSampler(user, anime, num_anime, per_positive=5, seed=0)
    rated = set(map(tuple, np.array(pairs).tolist()))
    drawn = {0: set(), 1: set(), 2: set()}
    for epoch in range(20):
        users, negatives = sampler.sample(user, epoch)
        assert len(users) == 5 * len(user)
        assert not any((u, a) in rated for u, a in zip(users.tolist(), negatives.tolist()))
        for u, a in zip(users.tolist(), negatives.tolist()):
            drawn[u].add(a)
    assert drawn[0] == {4, 17}  # only the two it has not rated
    assert drawn[2] == set(range(num_anime)) - {5}  # everything else, in time
    # a user who rated every anime gets no negatives rather than an endless redraw
    full = NegativeSampler(np.zeros(num_anime, int), np.arange(num_anime), num_anime, 2, 0)
    assert len(full.sample(np.zeros(num_anime, int), 0)[0]) == 0


def test_train_data_never_samples_known_pairs_from_other_splits():
    frame = taste_frame()
    valid = frame.sample(frac=0.2, random_state=0)
    train = frame.drop(valid.index)
    data = train_data(train, model_cfg("model.negatives_per_positive=4"), 40, seed=0, known=(valid,))
    known = set(zip(frame.user_index, frame.anime_index))

    def epoch_rows(epoch, seed=0):
        batches = list(make_dataset(data, 50, shuffle=True, seed=seed, epoch=epoch))
        users = np.concatenate([features["user"].numpy() for features, _ in batches])
        anime = np.concatenate([features["anime"].numpy() for features, _ in batches])
        return batches, users, anime, np.concatenate([target.numpy() for _, target in batches])

    batches, users, anime, target = epoch_rows(0)
    negatives = target < 0
    # every rated pair once per epoch, 4 negatives each, drawn batch by batch; none of them a known pair
    assert (~negatives).sum() == len(train) and negatives.sum() == 4 * len(train)
    assert all(len(b[1]) <= 50 for b in batches) and max(len(b[1]) for b in batches) == 50
    assert not any(pair in known for pair in zip(users[negatives].tolist(), anime[negatives].tolist()))
    # the same epoch draws the same negatives (a resumed run sees the same batches); the next epoch others
    again = epoch_rows(0)
    assert all(np.array_equal(a[0]["anime"], b[0]["anime"]) for a, b in zip(batches, again[0]))
    _, _, next_anime, next_target = epoch_rows(1)
    assert not np.array_equal(next_anime[next_target < 0], anime[negatives])


def test_bias_terms_are_saved_and_used_in_predictions(tmp_path):
    from animerec.bundle import ModelBundle, write_bundle

    frame = taste_frame()
    cfg = model_cfg("model.use_bias=true", "model.negatives_per_positive=2")
    model = build_model(cfg, 60, 40)
    fit(model, train_data(frame, cfg, 40, seed=0), None, cfg, verbose=0)
    user_bias = model.user_bias.get_weights()[0]
    user_bias[7] += 2.0  # a user who rates everything higher
    model.user_bias.set_weights([user_bias])
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.user_bias.get_weights()[0], user_bias)
    np.testing.assert_array_equal(loaded.preference_bias.get_weights()[0], model.preference_bias.get_weights()[0])

    scorer = scorer_from_model(model)
    anime = pd.DataFrame({"anime_id": np.arange(40) + 100, "name": [f"a{i}" for i in range(40)], "genres": "Action",
                          "type": "TV", "episodes": 12, "score": 7.0, "members": 1000, "anime_index": np.arange(40)})
    write_bundle(tmp_path, scorer_arrays={"kernel": scorer.kernel, "bias": scorer.bias, "user_bias": user_bias,
                                          "anime_bias": model.anime_bias.get_weights()[0],
                                          "preference_bias": model.preference_bias.get_weights()[0]},
                 user_emb=model.user_embedding.get_weights()[0], anime_emb=model.anime_embedding.get_weights()[0],
                 activation="sigmoid", user_ids=np.arange(60), anime_ids=anime.anime_id.to_numpy(),
                 scale={"min": 1.0, "max": 10.0}, anime=anime, ratings=frame)
    bundle = ModelBundle.load(tmp_path)
    assert bundle.info["use_bias"] and bundle.info["preference"]
    pairs = {"user": np.full(40, 7), "anime": np.arange(40)}
    expected = model.predict(pairs, verbose=0)
    np.testing.assert_allclose(bundle.predict(np.full(40, 7), anime.anime_id), expected[:, 0] * 9 + 1, rtol=1e-4)
    np.testing.assert_allclose(1 / (1 + np.exp(-bundle.scorer.rank_users(np.array([7]))[0])), expected[:, 1], rtol=1e-4)
    # the recommender ranks by the preference head and reports its scores; predicted ratings stay available
    from animerec.recommenders import EmbeddingRecommender

    ids, scores = EmbeddingRecommender(bundle).recommend(7, n=5)
    rank = bundle.scorer.rank_users(np.array([7]))[0]
    rank[frame.loc[frame.user_index == 7, "anime_index"].to_numpy()] = -np.inf
    assert list(ids) == list(anime.anime_id.to_numpy()[np.argsort(-rank, kind="stable")[:5]])
    np.testing.assert_allclose(scores, rank[ids - 100], rtol=1e-6)
    np.testing.assert_allclose(EmbeddingRecommender(bundle).predicted_ratings(7)[ids - 100],
                               bundle.predict(np.full(5, 7), ids), rtol=1e-5)
    without = scorer_from_model(model)
    without.user_bias = np.zeros_like(without.user_bias)
    assert (bundle.scorer.score_pairs(np.full(40, 7), np.arange(40)) > without.score_pairs(np.full(40, 7), np.arange(40))).all()


def test_presets_load_by_name():
    best = compose_config(["model=best"], PROJECT_ROOT).model
    seed = compose_config([], PROJECT_ROOT).model
    assert best.name == "best" and best.use_bias and best.ranker.kind == "ease"
    assert seed.name == "seed" and not seed.use_bias and seed.negatives_per_positive == 0
    assert seed.ranker.kind == "none"  # the faithful default has no ranking head
    assert seed.embedding_size == 128 and seed.kernel_initializer == "he_normal"
    with pytest.raises(ConfigError, match="model"):
        compose_config(["model=fastest"], PROJECT_ROOT)


def test_keras_fit_refuses_sampled_negatives():
    cfg = model_cfg("model.negatives_per_positive=2")
    with pytest.raises(ConfigError, match="train.trainer=lazy"):
        fit(build_model(cfg, 60, 40), train_data(taste_frame(), cfg, 40, 0), None, cfg, trainer="keras", verbose=0)


@pytest.mark.slow
def test_multirun_sweep_writes_a_summary_table(trained, tmp_path):
    cfg, _, _ = trained
    store = tmp_path / "store"
    shutil.copytree(cfg.main.artifact_root, store, ignore=shutil.ignore_patterns("model", "similar_*", "rating_recs"))
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    out = subprocess.run(
        [sys.executable, "main.py", "-m", "main.steps=[train]", "model=seed,best", "model.epochs=2",
         "model.embedding_size=16", "train.verbose=0", f"main.artifact_root={store}", f"wandb.dir={tmp_path}",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert summary["overrides"].str.contains("model=seed").iloc[0] and summary["overrides"].str.contains("model=best").iloc[1]
    assert list(summary["status"]) == ["completed", "completed"] and list(summary["model"]) == ["model:v1", "model:v2"]
    assert summary[["rmse", "recall_at_10", "ndcg_at_10", "popularity_ndcg_at_10"]].notna().all().all()
    assert "Sweep summary" in out.stdout and (sweep_dir / "summary.md").read_text().startswith("| job |")


@pytest.mark.slow
def test_optuna_sweep_optimises_a_valid_metric_and_lists_its_trials(trained, tmp_path):
    """hydra/sweeper=tune: Hydra's Optuna sweeper; each trial is a pipeline run (an MLflow parent run); the objective
    is model.best_metric on valid; the summary table lists the trials with the values Optuna saw."""
    import yaml
    from mlflow.tracking import MlflowClient

    cfg, _, _ = trained
    store = tmp_path / "store"
    shutil.copytree(cfg.main.artifact_root, store, ignore=shutil.ignore_patterns("model", "similar_*", "rating_recs"))
    sweep_dir, tracking = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "WANDB_MODE": "disabled", "MLFLOW_TRACKING_URI": tracking}
    out = subprocess.run(
        [sys.executable, "main.py", "-m", "hydra/sweeper=tune", "hydra.sweeper.n_trials=3", "main.steps=[train]",
         "model.epochs=2", "model.embedding_size=16", "train.verbose=0", "model.best_metric=valid_recall_at_10",
         f"main.artifact_root={store}", f"wandb.dir={tmp_path}", f"hydra.sweep.dir={sweep_dir}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert list(summary["status"]) == ["completed"] * 3 and summary["overrides"].str.contains("model.l2=").all()
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(summary["valid_recall_at_10"].max())  # the objective is the valid metric
    client = MlflowClient(tracking_uri=tracking)  # the sweep's own store; the session's tracking URI is left alone
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = {r.info.run_id for r in client.search_runs(experiments, "attributes.run_name = 'pipeline'")}
    assert set(summary["mlflow_run_id"]) <= parents  # each trial is its own MLflow pipeline run


def _quality():
    sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
    try:
        import quality
    finally:
        sys.path.pop(0)
    return quality


def test_ease_and_rp3beta_peers_compute_their_published_formulas():
    import scipy.sparse as sp

    quality = _quality()
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 8)) < 0.35).astype(np.float32)
    matrix, lam = sp.csr_matrix(dense), 5.0
    scores = quality.fit_ease(matrix, lam)(np.arange(30))
    gram = dense.T @ dense
    for j in range(8):  # each column: ridge regression of item j on the other items (zero diagonal)
        others = [i for i in range(8) if i != j]
        b = np.linalg.solve(gram[np.ix_(others, others)] + lam * np.eye(7), gram[others, j])
        np.testing.assert_allclose(scores[:, j], dense[:, others] @ b, rtol=1e-4, atol=1e-5)
    # RP3beta: two-step transition probability item i -> user -> item j, ** alpha, / popularity_j ** beta
    walk = (dense.T / dense.sum(axis=0)[:, None]) @ (dense / np.maximum(dense.sum(axis=1), 1)[:, None])
    weights = walk ** 0.8 / dense.sum(axis=0)[None, :] ** 0.3
    np.fill_diagonal(weights, 0)
    np.testing.assert_allclose(quality.fit_rp3beta(matrix, 0.8, 0.3)(np.arange(30)), dense @ weights, rtol=1e-4)


@pytest.mark.slow
def test_quality_benchmark_scores_the_peers_on_the_real_sample(tmp_path):
    """benchmarks/quality.py's peers run on the real 91-user sample, on one split and candidate rule."""
    quality = _quality()
    from animerec.data import demo

    frames, num_users, num_anime = quality.load_split(demo.catalogue_path(), quality.SAMPLE, tmp_path, 42, 20)
    peers = ["popularity", "surprise SVD", "RP3beta"]
    table = quality.evaluate(frames, num_users, num_anime, peers).set_index("model")
    assert list(table.index) == peers
    assert table.loc["RP3beta", "ndcg_at_10"] > table.loc["popularity", "ndcg_at_10"]  # tuned on valid, measured on test
    assert 1.0 < table.loc["surprise SVD", "rmse"] < 2.5
    assert (table[["recall_at_10", "ndcg_at_10"]] > 0).all().all()
