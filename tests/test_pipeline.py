"""The pipeline shell: step selection, component entry points, and `mlflow run .` end to end."""

import os
import subprocess
import sys

import pytest

from animerec.errors import ConfigError
from animerec.pipeline import compose_config, step_main
from animerec.steps import INPUTS, STEPS, upstream_of
from tests.conftest import PROJECT_ROOT, TINY_DEMO


def test_the_steps_are_ordered_and_checked_by_the_schema():
    steps = {"all": list(STEPS), "preprocess,download": ["download", "preprocess"], "[preprocess]": ["preprocess"]}
    for given, expected in steps.items():
        assert compose_config([f"main.steps='{given}'" if "," in given else f"main.steps={given}"],
                              PROJECT_ROOT).main.steps == expected
    with pytest.raises(ConfigError, match="unknown step.*trian; the steps are download"):
        compose_config(["main.steps='download,trian'"], PROJECT_ROOT)
    with pytest.raises(ConfigError, match="no step named"):
        compose_config(["main.steps=' , '"], PROJECT_ROOT)


def test_step_table_matches_components_and_config():
    """Each step of the table has its thin component folder, and only those; each input can be pinned."""
    folders = {p.name for p in (PROJECT_ROOT / "components").iterdir() if p.is_dir()}
    assert folders == set(STEPS)
    for name, step in STEPS.items():
        folder = PROJECT_ROOT / "components" / name
        assert f"name: animerec-{name.replace('_', '-')}" in (folder / "MLproject").read_text()
        assert f'step_main("{name}"' in (folder / "run.py").read_text()
        assert callable(step.function) and step.function.__name__ == name
    cfg = compose_config([], PROJECT_ROOT)
    assert set(type(cfg.inputs).model_fields) == set(INPUTS) == {i for s in STEPS.values() for i in s.inputs}
    assert upstream_of("model") == ["download", "preprocess", "train"]
    assert upstream_of("rating_recs") == ["download", "preprocess", "train", "similar_users", "rating_recs"]


def test_bad_override_is_a_config_error():
    with pytest.raises(ConfigError, match="bad configuration override"):
        compose_config(["data.no_such_key=1"], PROJECT_ROOT)


def test_component_prints_clear_error_and_exit_code(tmp_path, capsys):
    code = step_main("preprocess", PROJECT_ROOT, ["--overrides", f"main.artifact_root={tmp_path} wandb.mode=disabled"])
    assert code == 2
    assert "No artifact named 'raw_anime'" in capsys.readouterr().err


def _mlflow_run(project: str, params: dict, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "WANDB_MODE": "offline"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    args = [sys.executable, "-m", "mlflow", "run", project, "--env-manager", "local"]
    for key, value in params.items():
        args += ["-P", f"{key}={value}"]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900), env


@pytest.mark.slow
def test_mlflow_run_end_to_end(tmp_path):
    """`mlflow run . --env-manager local` on tiny demo data, as a user would type it, with a quoted title and a
    list holding a space passed through hydra_options; then every step's artifact is checked."""
    import json

    import pandas as pd

    steps = os.environ.get("ANIMEREC_E2E_STEPS", "all")
    # `mlflow run` runs main.py inside the project folder: point the store and W&B at tmp_path.
    options = " ".join(TINY_DEMO + [f"main.artifact_root={tmp_path / 'artifacts'}", f"wandb.dir={tmp_path}",
                                    "model.epochs=2", "model.embedding_size=16", "recs.n=7",
                                    'recs.anime="Cowboy Bebop"', 'recs.genres=[Action,"Slice of Life"]'])
    result, env = _mlflow_run(str(PROJECT_ROOT), {"steps": steps, "hydra_options": options}, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    # quiet: no third-party noise; the run ends on its summary, with the test metrics and the model's reference
    printed = result.stdout + result.stderr
    for noise in ("cuInit", "cuda drivers", "wandb: ", "Downloading artifacts", "CloudPickle", "Running command",
                  "Add type hints"):
        assert noise not in printed, noise
    if steps == "all":
        tail = "\n".join(result.stdout.splitlines()[-40:])
        assert "Pipeline summary" in tail and "recall@10" in tail and "model:v1" in tail, tail
        assert "animerec recommend --likes" in tail and "animerec web" in tail
    from animerec.artifacts import ArtifactStore
    from animerec.bundle import ModelBundle

    store = ArtifactStore(tmp_path / "artifacts", verify=True)  # every file matches its manifest
    assert set(store.names()) == {"raw_anime", "raw_ratings", "preprocessed", "model", "similar_anime",
                                  "similar_users", "rating_recs"}
    assert (store.resolve("raw_anime").path / "anime.csv.gz").is_file()
    raw = pd.read_csv(store.resolve("raw_ratings").file("animelist.csv"))
    assert list(raw.columns) == ["user_id", "anime_id", "rating", "watching_status", "watched_episodes"]
    assert raw.user_id.nunique() == 150

    pre = store.resolve("preprocessed")
    stats = json.loads(pre.file("stats.json").read_text())
    splits = {name: pd.read_parquet(pre.file(f"{name}.parquet")) for name in ("train", "valid", "test")}
    assert {name: len(frame) for name, frame in splits.items()} == stats["splits"]
    assert set(splits["train"].columns) >= {"user_id", "anime_id", "user_index", "anime_index", "rating", "rating_scaled"}
    assert splits["train"].rating.between(1, 10).all() and splits["train"].rating_scaled.between(0, 1).all()
    assert pre.manifest["producer"]["inputs"] == {"raw_anime": "raw_anime:v1", "raw_ratings": "raw_ratings:v1"}

    model = store.resolve("model")
    metrics = json.loads(model.file("metrics.json").read_text())
    assert {"rmse", "mae", "recall_at_10", "ndcg_at_10", "baselines"} <= set(metrics) and metrics["epochs_run"] == 2
    bundle = ModelBundle.load(model.path)
    assert bundle.info["num_users"] == stats["num_users"] and bundle.info["embedding_size"] == 16
    assert model.manifest["producer"]["inputs"] == {"preprocessed": "preprocessed:v1"}
    assert (model.path / "loss_curve.png").stat().st_size > 1000

    similar = store.resolve("similar_anime")
    assert json.loads(similar.file("query.json").read_text())["title"] == "Cowboy Bebop"  # the spaced title arrived whole
    table = pd.read_csv(similar.file("similar_anime.csv"))
    assert len(table) == 7 and 1 not in table.anime_id.tolist() and table.similarity.is_monotonic_decreasing
    assert table.genres.str.contains("Action|Slice of Life").all()  # the list with a spaced item arrived whole
    assert similar.manifest["producer"]["inputs"] == {"model": "model:v1"}

    users = store.resolve("similar_users")
    user_id = json.loads(users.file("query.json").read_text())["user_id"]
    assert len(pd.read_csv(users.file("similar_users.csv"))) == 7
    assert {"genres.csv", "favorites.csv", "user_based_recs.csv", "genres.png"} <= set(users.manifest["files"])
    recs = store.resolve("rating_recs")
    assert json.loads(recs.file("query.json").read_text())["user_id"] == user_id  # pinned to this run's similar_users
    predicted = pd.read_csv(recs.file("rating_recs.csv"))
    assert len(predicted) == 7 and predicted.predicted_rating.between(1, 10).all()
    rated = set(bundle.ratings.anime_index[bundle.ratings.user_index == bundle.user_index(user_id)])
    assert not rated & {bundle.anime_index(a) for a in predicted.anime_id}
    assert recs.manifest["producer"]["inputs"] == {"model": "model:v1", "similar_users": "similar_users:v1"}
    assert list((tmp_path / "wandb").glob("offline-run-*"))

    import mlflow

    client = mlflow.tracking.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(client.search_experiments()[-1].experiment_id)
    parents = [r for r in runs if r.info.run_name == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert {r.info.run_name for r in children} == {"download", "preprocess", "train", "similar_anime",
                                                    "similar_users", "rating_recs"}
    assert all(r.info.status == "FINISHED" for r in children)

    # a component run alone through `mlflow run`, with a spaced value, reads the same store
    alone, _ = _mlflow_run(str(PROJECT_ROOT / "components" / "similar_anime"), {"overrides": " ".join([
        f"main.artifact_root={tmp_path / 'artifacts'}", f"wandb.dir={tmp_path}", 'recs.anime="Steins;Gate"',
        "recs.types=[TV]", "recs.n=3"])}, tmp_path)
    assert alone.returncode == 0, alone.stdout[-2000:] + alone.stderr[-3000:]
    second = store.resolve("similar_anime:v2")
    assert json.loads(second.file("query.json").read_text())["title"] == "Steins;Gate"
    assert (pd.read_csv(second.file("similar_anime.csv")).type == "TV").all()


def test_the_pipeline_hands_each_step_absolute_paths_and_the_versions_made_before_it(tmp_path, monkeypatch):
    """Steps run inside their component folders: the store, the W&B folder and recs.ratings_file reach them as
    absolute paths, and each step gets the exact versions the earlier steps of this run produced."""
    from animerec import pipeline

    asked = []

    def step_run(project_root, step, overrides, experiment_id):
        asked.append((step, dict(o.split("=", 1) for o in overrides)))
        return {"similar_users": "similar_users:v7"} if step == "similar_users" else {}

    monkeypatch.setattr(pipeline, "run_step", step_run)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "0")  # the session's default experiment stays the active one
    monkeypatch.chdir(tmp_path)
    overrides = ["main.steps=[similar_users,rating_recs]", "main.artifact_root=store", "recs.ratings_file=my list.csv",
                 "recs.n=5"]
    pipeline.run_pipeline(compose_config(overrides, PROJECT_ROOT), overrides, PROJECT_ROOT)
    assert [step for step, _ in asked] == ["similar_users", "rating_recs"]
    for _, given in asked:
        assert given["main.artifact_root"] == f'"{tmp_path / "store"}"' and given["recs.n"] == "5"
        assert given["recs.ratings_file"] == f'"{tmp_path / "my list.csv"}"' and "main.steps" not in given
    assert "inputs.similar_users" not in asked[0][1] and asked[1][1]["inputs.similar_users"] == '"similar_users:v7"'


def test_the_summary_names_each_step_the_test_metrics_the_model_and_what_to_try_next(tmp_path):
    from animerec.pipeline import summary_text

    summary = {"mlflow_run_id": "abc", "model": "model:v3", "model_path": str(tmp_path / "model" / "v3"),
               "recall_at_10": 0.2065, "ndcg_at_10": 0.1629, "rmse": 1.416, "popularity_recall_at_10": 0.0862,
               "popularity_ndcg_at_10": 0.0722}
    text = summary_text(summary, {"download": ("succeeded", 3.0), "train": ("failed", 0.0)}, tmp_path, None)
    assert "download       succeeded" in text and "train          failed" in text and "(MLflow run abc, 3 s)" in text
    assert "recall@10 0.2065, NDCG@10 0.1629, RMSE 1.416 | popularity: recall@10 0.0862" in text
    assert f"Model: model:v3 in {tmp_path / 'model' / 'v3'}" in text and f"--store {tmp_path}" in text
    bare = summary_text({"mlflow_run_id": "abc"}, {"download": ("succeeded", 3.0)}, tmp_path, None)
    assert "Model:" not in bare and "Test:" not in bare  # no model trained: nothing to point at


def test_quiet_by_default_and_everything_again_with_v(monkeypatch, capfd):
    import logging

    from animerec.console import QUIET_ENV, VERBOSE_ENV, native_stderr_quiet, setup_logging
    from animerec.launch import prepare_argv

    for name in (*QUIET_ENV, VERBOSE_ENV):
        monkeypatch.delenv(name, raising=False)
    level = logging.getLogger("mlflow").level
    try:
        setup_logging()
        assert {name: os.environ.get(name) for name in QUIET_ENV} == QUIET_ENV  # the steps' processes inherit it
        assert logging.getLogger("mlflow").level == logging.WARNING
    finally:
        logging.getLogger("mlflow").setLevel(level)
    with native_stderr_quiet():
        os.write(2, b"cudart_stub: Could not find cuda drivers\n")  # a native library's write, below Python
    assert "cuda" not in capfd.readouterr().err
    assert prepare_argv(["-v", "--overrides", "model=best -v"]) == ["model=best"] and os.environ[VERBOSE_ENV] == "1"
    with native_stderr_quiet():
        os.write(2, b"cudart_stub: Could not find cuda drivers\n")
    assert "cuda" in capfd.readouterr().err


def test_the_summary_goes_to_a_wandb_run_of_its_own_unless_wandb_is_disabled(tmp_path):

    from animerec.pipeline import summary_to_wandb
    from tests.conftest import composed

    settings = composed().wandb.model_copy(update=dict(mode="offline", dir=str(tmp_path), group="pipeline-test"))
    summary_to_wandb(settings.model_copy(update=dict(mode="disabled")), {"recall_at_10": 0.2}, "report")
    assert not list(tmp_path.glob("wandb/offline-run-*"))
    summary_to_wandb(settings, {"recall_at_10": 0.2, "model": "model:v1"}, "== Pipeline summary ==")
    runs = list(tmp_path.glob("wandb/offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
