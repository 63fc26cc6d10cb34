import numpy as np
import pytest

from animerec.selection import choose_best, choose_knob, deal_folds, fold_wins, mean_score, paired_gain, per_user


def test_deal_folds_gives_each_user_an_even_share_of_each_fold():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 50, size=2000)
    folds = deal_folds(users, 5, seed=1)
    assert set(np.unique(folds)) == set(range(5))
    for user in np.unique(users):
        counts = np.bincount(folds[users == user], minlength=5)
        assert counts.max() - counts.min() <= 1  # dealt round-robin
    assert np.array_equal(folds, deal_folds(users, 5, seed=1))  # seeded
    assert not np.array_equal(folds, deal_folds(users, 5, seed=2))


def test_per_user_means_skip_folds_where_a_user_was_not_scored():
    scores = np.array([[1.0, np.nan, np.nan], [3.0, 2.0, np.nan]])
    np.testing.assert_allclose(per_user(scores), [2.0, 2.0, np.nan])
    assert mean_score(scores) == pytest.approx(2.0)


def test_a_knob_leaves_neutral_only_when_its_gain_clears_zero():
    rng = np.random.default_rng(0)
    base = rng.random((5, 200))
    noise = rng.normal(0, 0.05, size=(5, 200))
    clear = {0.0: base, 1.0: base + 0.02 + noise * 0.1, 2.0: base + noise}  # 2: noise only
    chosen, report = choose_knob(0.0, clear)
    assert chosen == 1.0 and report["chosen"] == "1" and report["values"]["1"]["low"] > 0
    assert report["values"]["2"]["low"] < 0 < report["values"]["2"]["high"]
    assert sum(report["fold_wins"].values()) == 5
    chosen, report = choose_knob(0.0, {0.0: base, 2.0: base + noise})
    assert chosen == 0.0 and report["chosen"] == "0"  # a noisy gain, however large its mean, stays neutral
    chosen, _ = choose_knob(0.0, {0.0: base, 1.0: base - 0.02})
    assert chosen == 0.0


def test_choose_best_reports_how_flat_the_curve_is():
    rng = np.random.default_rng(1)
    base = rng.random((5, 300))
    scores = {25.0: base - 0.05, 50.0: base + rng.normal(0, 0.01, base.shape), 100.0: base, 200.0: base - 0.1}
    best, report = choose_best(scores)
    assert best in (50.0, 100.0) and report["chosen"] == f"{best:g}"
    assert set(report["within_noise"]) == {"50", "100"}
    assert report["curve"]["200"]["high"] < 0
    assert sum(fold_wins(scores).values()) == 5


def test_paired_gain_pairs_users_over_the_folds_both_scored():
    a = np.array([[1.0, 2.0], [np.nan, 2.0]])
    b = np.array([[0.5, 2.0], [np.nan, 1.0]])
    gain, low, high = paired_gain(a, b)
    assert gain == pytest.approx((0.5 + 0.5) / 2) and low <= gain <= high


def test_the_train_step_records_every_choice_in_metrics_json_and_mlflow(trained):
    import mlflow

    cfg, _tmp, result = trained
    metrics = result["metrics"]  # what metrics.json holds
    ranker, taste = metrics["ranker"], metrics["taste"]
    assert ranker["folds"] == cfg.evaluate.folds == 5 and set(ranker["l2"]["curve"]) == {"50", "500"}
    assert ranker["chosen"]["l2"] == float(ranker["l2"]["chosen"]) == metrics["ranker_l2"]
    like = ranker["like_weight"]
    assert {"gain", "low", "high", "mean"} <= set(like["values"]["1"]) and sum(like["fold_wins"].values()) == 5
    assert (like["chosen"] == "1") == (like["values"]["1"]["low"] > 0)  # the rule, as recorded
    assert taste["chosen"] in taste["curve"]["curve"] and sum(taste["curve"]["fold_wins"].values()) == 5
    logged = {}
    for experiment in mlflow.search_experiments():
        for run in mlflow.search_runs([experiment.experiment_id], output_format="list"):
            logged.update(run.data.metrics)
    assert "ranker.like_weight.values.1.gain" in logged and "ranker.like_weight.fold_wins.1" in logged
    assert logged["ranker.like_weight.values.1.low"] == pytest.approx(like["values"]["1"]["low"])
    assert any(key.startswith("taste.curve.curve.") for key in logged)  # a blend's name, made MLflow-safe


def test_the_preprocess_and_train_runs_list_their_data_as_mlflow_datasets(trained):
    """Lineage on the run page: the train step's run lists the splits it learned from (contexts training,
    validation, testing), the preprocess step's run the raw ratings, each with its manifest's sha256."""
    import mlflow

    by_step = {}
    for experiment in mlflow.search_experiments():
        for run in mlflow.search_runs([experiment.experiment_id], output_format="list"):
            step = run.data.tags.get("animerec.step")
            by_step.setdefault(step, []).extend(run.inputs.dataset_inputs)
    contexts = {next(t.value for t in d.tags if t.key == "mlflow.data.context") for d in by_step["train"]}
    assert {"training", "validation", "testing"} <= contexts
    assert all(len(d.dataset.digest) == 32 and d.dataset.source_type == "local" for d in by_step["train"])
    assert any(d.dataset.name.startswith("raw_ratings/") for d in by_step["preprocess"])
